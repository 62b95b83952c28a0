"""AOT cubins for the TensorRT plugin: compiled on this CPU-only machine, packed, selected per GPU,
and launched through cuda-python alone (launch on CUDA only)."""
from __future__ import annotations

import re

import pytest
import torch

from sv3d_trt.errors import StaleEngineError
from sv3d_trt.kernels import aot, launch
from sv3d_trt.kernels import temporal_attention_kernel as ta

FRAMES = 21


@pytest.fixture(scope="module")
def sm89_fp16():
    return aot.compile_temporal_attention(89, "fp16", FRAMES, 64)


@pytest.mark.parametrize("arch", [89, 90, 120])
def test_cubin_for_each_target(arch):
    k = aot.compile_temporal_attention(arch, "fp16", FRAMES, 64)
    assert k.cubin[:4] == b"\x7fELF" and len(k.cubin) > 10_000
    assert k.name == "_temporal_attention_fwd"
    assert k.num_warps == 4 and k.block_n == 4
    assert 0 <= k.shared <= 228 * 1024


def test_pack_roundtrip(sm89_fp16):
    other = aot.compile_temporal_attention(120, "fp32", FRAMES, 16)
    assert aot.unpack(aot.pack([sm89_fp16, other])) == [sm89_fp16, other]


def test_select_by_device_arch(sm89_fp16):
    import dataclasses

    sm80 = dataclasses.replace(sm89_fp16, arch=80)
    sm90 = dataclasses.replace(sm89_fp16, arch=90)
    kernels = [sm80, sm89_fp16, sm90]
    assert aot.select(kernels, 89, "fp16", 64) is sm89_fp16
    assert aot.select(kernels, 86, "fp16", 64) is sm80  # sm_80 code runs on later Ampere/Ada
    with pytest.raises(StaleEngineError, match="sm_100"):
        aot.select(kernels, 100, "fp16", 64)  # sm_90 cubins are arch-specific
    with pytest.raises(StaleEngineError, match="bf16"):
        aot.select(kernels, 89, "bf16", 64)


def test_launch_params_match_the_kernel_abi(sm89_fp16):
    """The launcher passes exactly the kernel entry's parameters, with matching widths."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    cfg = ta.config(FRAMES, 64, "fp16")
    num_warps = cfg.pop("num_warps")
    src = ASTSource(ta._temporal_attention_fwd, aot._signature(ta._temporal_attention_fwd.arg_names, cfg, "fp16"), constexprs=cfg)
    ptx = triton.compile(src, target=GPUTarget("cuda", 89, 32), options={"num_warps": num_warps, "num_stages": 1}).asm["ptx"]
    entry = ptx[ptx.index(".entry"):ptx.index(")", ptx.index(".entry"))]
    widths = [{"u64": 8, "u32": 4, "f32": 4}[t] for t in re.findall(r"\.param \.(\w+)", entry)]
    values, types = launch.kernel_params(sm89_fp16, 1, 2, 3, 4, (2 * FRAMES, 5184, 5, 64))
    import ctypes

    assert [ctypes.sizeof(t) for t in types] == widths
    assert values[4:8] == (5184 * 5 * 64, 5 * 64, 64, 1)  # contiguous strides of q


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["fp16", "bf16", "fp32"])
def test_cubin_launch_matches_reference(dtype):
    """The exact engine path: AOT cubin for this GPU, cuda-python launch on a torch stream."""
    torch_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    major, minor = torch.cuda.get_device_capability()
    kernel = aot.compile_temporal_attention(10 * major + minor, dtype, FRAMES, 64)
    q, k, v = (torch.randn(2 * FRAMES, 1296, 10, 64, device="cuda", dtype=torch_dtype) for _ in range(3))
    o = torch.empty_like(q)
    torch.cuda.current_stream().synchronize()  # the primary context is current from here on
    fn = launch.function_for_device([kernel], dtype, 64)
    stream = torch.cuda.current_stream().cuda_stream
    launch.launch_temporal_attention(fn, q.data_ptr(), k.data_ptr(), v.data_ptr(), o.data_ptr(), tuple(q.shape), stream)
    torch.cuda.synchronize()
    ref = ta.reference(q.float(), k.float(), v.float(), FRAMES)
    tol = {"fp16": 2e-3, "bf16": 1e-2, "fp32": 1e-5}[dtype]
    assert ((o.float() - ref).abs().max() / ref.abs().max()).item() <= tol

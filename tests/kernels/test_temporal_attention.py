"""Fused temporal attention vs the PyTorch reference, on Triton's CPU interpreter and on CUDA.

Inputs are strided views of one packed qkv projection (never contiguous), at the UNet's head
counts (5, 10, 20 at head_dim 64; the tiny config's head_dim 16) with T = 21. Tolerances are
max|kernel - ref| / max|ref| against an fp32 reference on the same (rounded) inputs:
fp32 1e-5; fp16 2e-3 (p and o rounded to fp16); bf16 1e-2 (o rounded to bf16, 8-bit mantissa;
on the interpreter its dots run in fp32, see `config()`, so bf16's p rounding is covered on CUDA only).

Interpreted cases run in one child process (`run_interpreted`): Triton reads TRITON_INTERPRET once,
at import, for the whole process, so setting it here would leak into every later test.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from sv3d_trt.errors import BackendUnavailableError
from sv3d_trt.kernels import temporal_attention
from sv3d_trt.kernels import temporal_attention_kernel as ta
from sv3d_trt.kernels import torch_op
from sv3d_trt.models.config import get_config

FRAMES = get_config("full").num_frames
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}


def case(dtype, heads, tokens, head_dim, videos=1, frames=FRAMES, layout="packed"):
    return dict(dtype=dtype, heads=heads, tokens=tokens, head_dim=head_dim, videos=videos, frames=frames, layout=layout)


def case_id(c: dict) -> str:
    return "{dtype}-h{heads}-n{tokens}-d{head_dim}-b{videos}-t{frames}-{layout}".format(**c)


# Every UNet head count at small H*W, both head dims, every dtype; then odd shapes (non-pow-2
# head dims and frame counts, two videos) and per-tensor layouts.
CI_CASES = [
    case(dt, heads, tokens, d)
    for dt in DTYPES
    for heads in (5, 10, 20)
    for tokens, d in ((81, 64), (100, 16))
] + [
    case("float32", 3, 37, 40, videos=2),
    case("float32", 3, 37, 24, videos=2, frames=5),
    case("float32", 3, 37, 64, videos=2, frames=1),
    case("float32", 5, 50, 64, videos=2, layout="mixed"),
    case("float16", 5, 50, 64, videos=2, layout="mixed"),
]
# The full config's four attention levels at their real sizes, CFG batch of two videos.
SLOW_CASES = [
    case(dt, heads, side * side, 64, videos=2)
    for dt in ("float32", "float16")
    for side, heads in ((72, 5), (36, 10), (18, 20), (9, 20))
]


def make_inputs(c: dict, device="cpu", seed=0):
    """q, k, v (B*T, H*W, heads, d), never contiguous. "packed": the three views of one
    (B*T, H*W, 3*heads*d) qkv projection; "mixed": transposed storage, a strided head dim,
    and one contiguous tensor."""
    g = torch.Generator().manual_seed(seed)
    bt, n, h, d = c["videos"] * c["frames"], c["tokens"], c["heads"], c["head_dim"]
    dtype = DTYPES[c["dtype"]]
    if c["layout"] == "packed":
        qkv = torch.randn(bt, n, 3 * h * d, generator=g).to(device=device, dtype=dtype)
        q, k, v = (x.unflatten(-1, (h, d)) for x in qkv.chunk(3, dim=-1))
    else:
        q = torch.randn(h, d, bt, n, generator=g).to(device=device, dtype=dtype).permute(2, 3, 0, 1)
        k = torch.randn(bt, n, h, 2 * d, generator=g).to(device=device, dtype=dtype)[..., ::2]
        v = torch.randn(bt, n, h, d, generator=g).to(device=device, dtype=dtype)
    assert not q.is_contiguous() and not k.is_contiguous()
    return q, k, v


def measure(c: dict, impl="triton", device="cpu") -> dict:
    q, k, v = make_inputs(c, device)
    out = temporal_attention(q, k, v, c["frames"], impl=impl)
    ref = ta.reference(q.float(), k.float(), v.float(), c["frames"])
    assert out.shape == q.shape and out.dtype == q.dtype
    err = ((out.float() - ref).abs().max() / ref.abs().max()).item()
    return dict(err=err, ref_max=ref.abs().max().item(), ref_std=ref.std().item())


def assert_close_to_reference(c: dict, result: dict) -> None:
    # non-trivial attention output first, then the per-dtype tolerance
    assert result["ref_max"] > 0.1 and result["ref_std"] > 0.01, result
    tol = TOL[DTYPES[c["dtype"]]]
    assert result["err"] <= tol, f"{case_id(c)}: rel err {result['err']:.2e} > {tol:.0e}"


def run_interpreted(cases: list[dict]) -> dict:
    """Run cases on Triton's CPU interpreter in a child process. TRITON_INTERPRET must be set
    before Triton is imported and then holds for the whole process, so it stays out of this one."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "2"}
    proc = subprocess.run(
        [sys.executable, __file__, json.dumps(cases)], env=env, capture_output=True, text=True, timeout=3000
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def ci_results():
    return run_interpreted(CI_CASES)


@pytest.fixture(scope="module")
def slow_results():
    return run_interpreted(SLOW_CASES)


@pytest.mark.parametrize("c", CI_CASES, ids=case_id)
def test_kernel_matches_reference(ci_results, c):
    assert_close_to_reference(c, ci_results[case_id(c)])


@pytest.mark.slow
@pytest.mark.parametrize("c", SLOW_CASES, ids=case_id)
def test_full_size_levels(slow_results, c):
    assert_close_to_reference(c, slow_results[case_id(c)])


def test_frames_must_divide_batch():
    q, k, v = make_inputs(case("float32", 2, 9, 16))
    with pytest.raises(ValueError, match="multiple of frames"):
        temporal_attention(q[:20], k[:20], v[:20], FRAMES, impl="triton")


@pytest.mark.skipif(ta.interpreted(), reason="this process runs Triton's interpreter")
def test_cpu_kernel_without_interpreter_is_refused():
    with pytest.raises(BackendUnavailableError, match="TRITON_INTERPRET"):
        temporal_attention(*make_inputs(case("float32", 2, 9, 16)), FRAMES, impl="triton")


def test_auto_on_cpu_is_the_reference():
    q, k, v = make_inputs(case("float32", 2, 9, 16))
    torch.testing.assert_close(temporal_attention(q, k, v, FRAMES), ta.reference(q, k, v, FRAMES), rtol=0, atol=0)
    with pytest.raises(ValueError, match="unknown impl"):
        temporal_attention(q, k, v, FRAMES, impl="xformers")


def test_custom_op_registration():
    """Fake impl, schema and CPU kernel agree (torch.library's own consistency checks)."""
    q, k, v = make_inputs(case("float32", 2, 9, 16))
    torch.library.opcheck(torch.ops.sv3d_trt.temporal_attention.default, (q, k, v, FRAMES))
    out = torch.ops.sv3d_trt.temporal_attention(q, k, v, FRAMES)
    torch.testing.assert_close(out, ta.reference(q, k, v, FRAMES))


# ---- CUDA ---------------------------------------------------------------------------------


@pytest.mark.gpu
def test_auto_dispatches_to_triton_on_cuda(monkeypatch):
    calls = []
    real = ta.temporal_attention_triton

    def spy(*args):
        calls.append(args[0].shape)
        return real(*args)

    monkeypatch.setattr(ta, "temporal_attention_triton", spy)
    c = case("float16", 20, 324, 64, videos=2)
    assert_close_to_reference(c, measure(c, impl="auto", device="cuda"))
    assert calls == [(2 * FRAMES, 324, 20, 64)]


@pytest.mark.gpu
@pytest.mark.parametrize("c", [dict(s, dtype=dt) for s in SLOW_CASES[:4] for dt in DTYPES], ids=case_id)
def test_cuda_kernel_levels(c):
    assert_close_to_reference(c, measure(c, device="cuda"))


@pytest.mark.gpu
def test_torch_compile_keeps_the_op():
    q, k, v = make_inputs(case("float16", 20, 81, 64), device="cuda")
    compiled = torch.compile(lambda q, k, v: torch_op.temporal_attention(q, k, v, FRAMES), fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v), temporal_attention(q, k, v, FRAMES))


if __name__ == "__main__":  # child of run_interpreted: TRITON_INTERPRET=1 was set before import
    assert ta.interpreted(), "run with TRITON_INTERPRET=1"
    torch.set_num_threads(2)
    print(json.dumps({case_id(c): measure(c) for c in json.loads(sys.argv[1])}))

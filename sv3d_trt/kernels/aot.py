"""Ahead-of-time compilation of the temporal-attention kernel to cubins, one per GPU architecture.

The TensorRT plugin calls this at engine build time, on any machine (no GPU needed: Triton's
bundled ptxas targets every arch), and stores the packed cubins in the engine's plugin fields,
so the process that runs the engine needs neither Triton nor torch (tensorrt.md, "Ahead-of-time
Triton kernels"). torch-free on purpose.

Packed format: 4-byte little-endian header length, a JSON header (one entry per cubin with its
launch metadata and byte range), then the cubins back to back.
"""
from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass

from ..errors import BackendUnavailableError, StaleEngineError

# Triton's CUDA ABI appends two pointer parameters after the kernel's own arguments: global and
# profile scratch. Our kernel needs neither (checked at compile time), so launches pass NULL.
TRITON_SCRATCH_PARAMS = 2


@dataclass(frozen=True)
class CompiledKernel:
    arch: int  # compute capability, 10 * major + minor
    dtype: str  # fp16 | bf16 | fp32
    frames: int
    head_dim: int
    name: str  # entry symbol in the cubin
    num_warps: int
    shared: int  # dynamic shared memory bytes
    block_n: int  # spatial locations per program: grid x = ceil(H*W / block_n)
    qk_scale: float  # runtime argument: 1/sqrt(head_dim) * log2(e)
    cubin: bytes


def _signature(arg_names: list[str], constexprs: dict, dtype: str) -> dict[str, str]:
    # Pointers carry the element type; every shape/stride is a plain i32 with no specialisation,
    # so one cubin serves every shape and stride of its (dtype, frames, head_dim).
    sig = {}
    for name in arg_names:
        if name in ("Q", "K", "V", "O"):
            sig[name] = f"*{dtype}"
        elif name in constexprs:
            sig[name] = "constexpr"
        elif name == "qk_scale":
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
    return sig


def compile_temporal_attention(arch: int, dtype: str, frames: int, head_dim: int) -> CompiledKernel:
    """Compile the kernel for sm_`arch` (e.g. 89, 90, 120) and one (dtype, frames, head_dim)."""
    try:
        import triton
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
    except ImportError as e:
        raise BackendUnavailableError(
            f"building the temporal-attention plugin needs Triton ({e}); `pip install triton`"
        ) from e
    from . import temporal_attention_kernel as ta

    if ta.interpreted():
        raise BackendUnavailableError(
            "cannot compile kernels in a process started with TRITON_INTERPRET=1 (Triton's "
            "standard library is then interpreter-only); build engines without it"
        )
    fn = ta._temporal_attention_fwd
    cfg = ta.config(frames, head_dim, dtype)
    num_warps = cfg.pop("num_warps")
    src = ASTSource(fn, _signature(fn.arg_names, cfg, dtype), constexprs=cfg)
    compiled = triton.compile(
        src, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps, "num_stages": 1}
    )
    md = compiled.metadata
    if md.global_scratch_size or md.profile_scratch_size:
        raise BackendUnavailableError(
            f"Triton {triton.__version__} gave the sm_{arch} kernel scratch memory "
            f"({md.global_scratch_size}/{md.profile_scratch_size} B), which the plugin launcher does not provide"
        )
    return CompiledKernel(
        arch=arch, dtype=dtype, frames=frames, head_dim=head_dim, name=compiled.name,
        num_warps=md.num_warps, shared=md.shared, block_n=cfg["BLOCK_N"],
        qk_scale=ta.qk_scale(head_dim), cubin=compiled.asm["cubin"],
    )


def pack(kernels: list[CompiledKernel]) -> bytes:
    header, blobs, offset = [], [], 0
    for k in kernels:
        entry = asdict(k)
        entry.pop("cubin")
        entry.update(offset=offset, size=len(k.cubin))
        header.append(entry)
        blobs.append(k.cubin)
        offset += len(k.cubin)
    head = json.dumps(header).encode()
    return struct.pack("<I", len(head)) + head + b"".join(blobs)


def unpack(data: bytes) -> list[CompiledKernel]:
    (n,) = struct.unpack_from("<I", data)
    body = 4 + n
    kernels = []
    for entry in json.loads(data[4:body].decode()):
        start = body + entry.pop("offset")
        size = entry.pop("size")
        kernels.append(CompiledKernel(**entry, cubin=bytes(data[start:start + size])))
    return kernels


def select(kernels: list[CompiledKernel], arch: int, dtype: str, head_dim: int) -> CompiledKernel:
    """The cubin for a device of compute capability `arch`: the exact arch, else (pre-Hopper
    only; Triton's sm_90+ cubins use arch-specific features) the newest same-major one below it."""
    same = [k for k in kernels if k.dtype == dtype and k.head_dim == head_dim]
    for k in same:
        if k.arch == arch:
            return k
    compatible = [k for k in same if k.arch < 90 and k.arch // 10 == arch // 10 and k.arch < arch]
    if compatible:
        return max(compatible, key=lambda k: k.arch)
    have = sorted({f"sm_{k.arch}/{k.dtype}/d{k.head_dim}" for k in kernels})
    raise StaleEngineError(
        f"no temporal-attention cubin for sm_{arch}/{dtype}/d{head_dim} in this engine "
        f"(it has {', '.join(have) or 'none'}); rebuild it for this GPU"
    )

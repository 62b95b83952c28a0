"""Fused learned blend of the spatial and temporal paths, with the temporal residual folded in.

sgm `AlphaBlender`: out = a s + (1 - a) t, a = sigmoid(mix_factor), after every VideoResBlock and
SpatialVideoTransformer. The temporal ResBlock's output is itself t = s + h (identity skip), so
the blend of a VideoResBlock is out = a s + (1 - a)(h + s): one kernel reads s, h (and the
residual) once and writes out once, where eager PyTorch runs an add, two casts, two multiplies
and an add. `alpha` is a one-element device tensor (no host sync, so the step graph-captures).

Any layout works as long as every operand has the same dense strides (channels-last,
channels-last-3d views, contiguous): the kernel walks the storage linearly.

Math = `reference()`: out = a s + (1 - a)(t + r), a = alpha in the operands' dtype; fp32 inside
the kernel.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import triton
import triton.language as tl

from ..errors import BackendUnavailableError
from .temporal_attention_kernel import interpreted

if TYPE_CHECKING:
    import torch


@triton.jit
def _blend_fwd(S, T, R, O, A, numel, HAS_RESIDUAL: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    a = tl.load(A).to(tl.float32)
    s = tl.load(S + offs, mask=mask, other=0.0).to(tl.float32)
    t = tl.load(T + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        t += tl.load(R + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(O + offs, (a * s + (1.0 - a) * t).to(O.dtype.element_ty), mask=mask)


def is_dense(x: torch.Tensor) -> bool:
    """True when x's elements fill exactly numel() consecutive storage slots (any dim order)."""
    expected = 1
    for size, stride in sorted(((s, st) for s, st in zip(x.shape, x.stride()) if s != 1), key=lambda d: d[1]):
        if stride != expected:
            return False
        expected *= size
    return True


def blend_triton(spatial: torch.Tensor, temporal: torch.Tensor, alpha: torch.Tensor,
                 residual: torch.Tensor | None = None) -> torch.Tensor:
    """a s + (1 - a)(t [+ r]) for same-shaped s, t, r; alpha: one-element tensor on their device.
    Returns a new tensor with s's layout."""
    import torch

    operands = [spatial, temporal] + ([residual] if residual is not None else [])
    if any(o.shape != spatial.shape or o.dtype != spatial.dtype for o in operands):
        raise ValueError("blend operands must share shape and dtype: "
                         + ", ".join(f"{tuple(o.shape)} {o.dtype}" for o in operands))
    if alpha.numel() != 1:
        raise ValueError(f"alpha must hold one element, got shape {tuple(alpha.shape)}")
    if spatial.device.type != "cuda" and not interpreted():
        raise BackendUnavailableError(f"the Triton blend kernel needs CUDA tensors, got {spatial.device} "
                                      "(or TRITON_INTERPRET=1 set before Triton is imported)")
    if not (is_dense(spatial) and all(o.stride() == spatial.stride() for o in operands)):
        operands = [o.contiguous() for o in operands]
    s, t = operands[:2]
    r = operands[2] if residual is not None else s
    out = torch.empty_like(s)  # dense s: same strides
    numel = s.numel()
    block = 1024
    _blend_fwd[(math.ceil(numel / block),)](s, t, r, out, alpha, numel,
                                            HAS_RESIDUAL=residual is not None, BLOCK=block, num_warps=4)
    return out


def reference(spatial: torch.Tensor, temporal: torch.Tensor, alpha: torch.Tensor,
              residual: torch.Tensor | None = None) -> torch.Tensor:
    """sgm `AlphaBlender` arithmetic in the operands' dtype (t + r first: the ResBlock's skip)."""
    if residual is not None:
        temporal = residual + temporal
    dtype = spatial.dtype
    return alpha.to(dtype) * spatial + (1.0 - alpha).to(dtype) * temporal

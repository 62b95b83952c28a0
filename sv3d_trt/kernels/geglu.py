"""Fused GEGLU gate: value * GELU(gate) from the (M, 2D) output of the GEGLU projection.

sgm `GEGLU` chunks the projection into [value | gate] and computes value * gelu(gate): in
eager PyTorch a GELU kernel and a multiply, each reading and writing the (M, D) halves (D = 4C,
the widest activations of every transformer block). One kernel reads both halves once and
writes the product, GELU in fp32.

Math = `reference()`: out = h[:, :D] * 0.5 g (1 + erf(g / sqrt 2)), g = h[:, D:] (exact erf GELU).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import triton
import triton.language as tl

from ..errors import BackendUnavailableError
from .temporal_attention_kernel import interpreted

if TYPE_CHECKING:
    import torch

SQRT1_2 = 0.7071067811865476


@triton.jit
def _geglu_fwd(
    H, O,
    stride_hm, stride_hd, stride_om,
    rows, width,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # One program: a BLOCK_M x BLOCK_D tile of the output, and the two matching input tiles.
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask = (offs_m[:, None] < rows) & (offs_d[None, :] < width)
    row = H + offs_m.to(tl.int64)[:, None] * stride_hm
    value = tl.load(row + offs_d[None, :] * stride_hd, mask=mask, other=0.0).to(tl.float32)
    gate = tl.load(row + (offs_d[None, :] + width) * stride_hd, mask=mask, other=0.0).to(tl.float32)
    out = value * (0.5 * gate * (1.0 + tl.math.erf(gate * SQRT1_2)))
    tl.store(O + offs_m.to(tl.int64)[:, None] * stride_om + offs_d[None, :], out.to(O.dtype.element_ty), mask=mask)


def geglu_triton(h: torch.Tensor) -> torch.Tensor:
    """h: (..., 2D) projection output (rows may be strided). Returns a new contiguous (..., D)."""
    import torch

    if h.shape[-1] % 2:
        raise ValueError(f"the GEGLU projection width must be even, got {h.shape[-1]}")
    if h.device.type != "cuda" and not interpreted():
        raise BackendUnavailableError(f"the Triton GEGLU kernel needs CUDA tensors, got {h.device} "
                                      "(or TRITON_INTERPRET=1 set before Triton is imported)")
    width = h.shape[-1] // 2
    h2 = h.reshape(-1, 2 * width)  # a view whenever the rows flatten
    out = torch.empty((h2.shape[0], width), dtype=h.dtype, device=h.device)
    block_d = min(triton.next_power_of_2(width), 256)
    block_m = 16
    grid = (triton.cdiv(h2.shape[0], block_m), triton.cdiv(width, block_d))
    _geglu_fwd[grid](h2, out, h2.stride(0), h2.stride(1), out.stride(0), h2.shape[0], width,
                     BLOCK_M=block_m, BLOCK_D=block_d, num_warps=4)
    return out.view(*h.shape[:-1], width)


def reference(h: torch.Tensor) -> torch.Tensor:
    """Plain PyTorch, as sgm `GEGLU.forward` after its projection."""
    import torch.nn.functional as F

    value, gate = h.chunk(2, dim=-1)
    return value * F.gelu(gate)

"""Fused LayerNorm over the channel axis of the UNet's (B*T, H*W, C) token stream.

Every transformer block of the UNet normalises its tokens before each of its (up to four)
sublayers. One program normalises BLOCK_M whole rows held in registers (C <= 1280 in SV3D):
one read, one write, statistics in fp32 whatever the activation dtype.

Math = `reference()`: y = (x - mean) / sqrt(var + eps) * w + b over the last axis, biased
variance, fp32 statistics (what `F.layer_norm` accumulates in for fp16/bf16 on CUDA).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import triton
import triton.language as tl

from ..errors import BackendUnavailableError
from .temporal_attention_kernel import interpreted

if TYPE_CHECKING:
    import torch


@triton.jit
def _layer_norm_fwd(
    X, Y, W, B,
    stride_xm, stride_ym,
    rows, cols, eps,
    BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
):
    # One program: BLOCK_M rows, each whole.
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_c = tl.arange(0, BLOCK_C)
    mask = (offs_m[:, None] < rows) & (offs_c[None, :] < cols)
    m64 = offs_m.to(tl.int64)[:, None]
    x = tl.load(X + m64 * stride_xm + offs_c[None, :], mask=mask, other=0.0).to(tl.float32)

    # 1. row statistics in fp32, variance about the mean
    mean = tl.sum(x, 1) / cols
    d = tl.where(mask, x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(d * d, 1) / cols + eps)

    # 2. normalise and affine
    w = tl.load(W + offs_c, mask=offs_c < cols, other=0.0).to(tl.float32)
    b = tl.load(B + offs_c, mask=offs_c < cols, other=0.0).to(tl.float32)
    y = d * rstd[:, None] * w[None, :] + b[None, :]
    tl.store(Y + m64 * stride_ym + offs_c[None, :], y.to(Y.dtype.element_ty), mask=mask)


def layer_norm_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm of x (..., C) over C. Rows may be strided (a view of a wider tensor), the channel
    axis must be unit-stride (else x is copied). Returns a new contiguous tensor."""
    import torch

    cols = x.shape[-1]
    if weight.shape != (cols,) or bias.shape != (cols,):
        raise ValueError(f"weight/bias must be ({cols},), got {tuple(weight.shape)}, {tuple(bias.shape)}")
    if x.device.type != "cuda" and not interpreted():
        raise BackendUnavailableError(f"the Triton LayerNorm kernel needs CUDA tensors, got {x.device} "
                                      "(or TRITON_INTERPRET=1 set before Triton is imported)")
    x2 = x.reshape(-1, cols)  # a view whenever the rows flatten
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    y = torch.empty((x2.shape[0], cols), dtype=x.dtype, device=x.device)
    block_c = triton.next_power_of_2(cols)
    block_m = max(1, min(16, 4096 // block_c))
    _layer_norm_fwd[(triton.cdiv(x2.shape[0], block_m),)](
        x2, y, weight, bias, x2.stride(0), y.stride(0), x2.shape[0], cols, eps,
        BLOCK_M=block_m, BLOCK_C=block_c, num_warps=4 if block_c <= 1024 else 8,
    )
    return y.view(x.shape)


def reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """Plain PyTorch LayerNorm over the last axis, statistics in fp32, result in x's dtype."""
    import torch.nn.functional as F

    return F.layer_norm(x.float(), x.shape[-1:], weight.float(), bias.float(), eps).to(x.dtype)

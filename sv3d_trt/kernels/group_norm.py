"""Fused GroupNorm(+SiLU): an optional per-channel pre-add, fp32 statistics, affine and SiLU in one
kernel, in the activation's own memory layout.

The reference ResBlock does `GroupNorm32(h + emb)` then SiLU: an elementwise add, an fp32 copy of
the activation, the norm, a cast back and the SiLU, five passes over the largest tensors of the
UNet (performance.md: elementwise and norms are 38 % of the eager step). Here the statistics are
accumulated in fp32 registers and the activation is read three times and written once.

x is (N, C, *spatial) with the spatial axes flattening to one uniformly strided axis L: NCHW
(stride 1), channels-last (stride C), and the temporal ResBlock's (B, C, T, H, W) view of a
channels-last (B*T, C, H, W) activation (stride C; its groups pool all T frames of a video,
sv3d.md §1.4). `bias_in` (N, C, K) is added before the norm, element l of L taking segment
l // (L / K): K = 1 for the per-frame time embedding, K = T for the temporal block's per-frame one.

Math = `reference()`: y = (x + b_in - mean_g) / sqrt(var_g + eps) * w + b [then SiLU], biased
variance over the C/G channels x L positions of each group, statistics in fp32.
"""
from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import triton
import triton.language as tl

from ..errors import BackendUnavailableError
from .temporal_attention_kernel import interpreted

if TYPE_CHECKING:
    import torch


@triton.jit
def _load_group_tile(X, BIAS, x_base, b_base, offs_c, offs_l, c_mask, l0,
                     stride_xc, stride_xl, stride_bc, stride_bk, length, seg_len,
                     HAS_BIAS: tl.constexpr, BLOCK_L: tl.constexpr):
    """(BLOCK_C, BLOCK_L) fp32 tile of x (+ bias_in) of one group; masked lanes read 0."""
    l = l0 + offs_l
    mask = c_mask[:, None] & (l[None, :] < length)
    x = tl.load(X + x_base + offs_c[:, None] * stride_xc + l[None, :].to(tl.int64) * stride_xl,
                mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        seg = (l // seg_len)[None, :]
        x += tl.load(BIAS + b_base + offs_c[:, None] * stride_bc + seg * stride_bk, mask=mask, other=0.0).to(tl.float32)
    return x, mask


@triton.jit
def _group_norm_fwd(
    X, Y, W, B, BIAS,
    stride_xn, stride_xc, stride_xl,
    stride_yn, stride_yc, stride_yl,
    stride_bn, stride_bc, stride_bk,
    channels, length, seg_len, groups, eps,
    HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr,
):
    # One program: all C/G channels x L positions of group g of sample n.
    pid = tl.program_id(0)
    n = pid // groups
    g = pid % groups
    per_group = channels // groups
    offs_c = g * per_group + tl.arange(0, BLOCK_C)
    offs_l = tl.arange(0, BLOCK_L)
    c_mask = tl.arange(0, BLOCK_C) < per_group
    x_base = n.to(tl.int64) * stride_xn
    y_base = n.to(tl.int64) * stride_yn
    b_base = n.to(tl.int64) * stride_bn
    count = per_group * length

    # 1. mean: fp32 partial sums per tile lane, reduced once at the end
    acc = tl.zeros((BLOCK_C, BLOCK_L), dtype=tl.float32)
    for l0 in range(0, length, BLOCK_L):
        x, _ = _load_group_tile(X, BIAS, x_base, b_base, offs_c, offs_l, c_mask, l0,
                                stride_xc, stride_xl, stride_bc, stride_bk, length, seg_len, HAS_BIAS, BLOCK_L)
        acc += x
    mean = tl.sum(tl.sum(acc, 1), 0) / count

    # 2. variance about the mean (two passes: no E[x^2] - E[x]^2 cancellation)
    acc = tl.zeros((BLOCK_C, BLOCK_L), dtype=tl.float32)
    for l0 in range(0, length, BLOCK_L):
        x, mask = _load_group_tile(X, BIAS, x_base, b_base, offs_c, offs_l, c_mask, l0,
                                   stride_xc, stride_xl, stride_bc, stride_bk, length, seg_len, HAS_BIAS, BLOCK_L)
        d = tl.where(mask, x - mean, 0.0)
        acc += d * d
    rstd = 1.0 / tl.sqrt(tl.sum(tl.sum(acc, 1), 0) / count + eps)

    # 3. normalise, affine, activation, store in the output's layout
    w = tl.load(W + offs_c, mask=c_mask, other=0.0).to(tl.float32)[:, None]
    b = tl.load(B + offs_c, mask=c_mask, other=0.0).to(tl.float32)[:, None]
    for l0 in range(0, length, BLOCK_L):
        x, mask = _load_group_tile(X, BIAS, x_base, b_base, offs_c, offs_l, c_mask, l0,
                                   stride_xc, stride_xl, stride_bc, stride_bk, length, seg_len, HAS_BIAS, BLOCK_L)
        y = (x - mean) * rstd * w + b
        if SILU:
            y = y / (1.0 + tl.exp(-y))
        l = l0 + offs_l
        tl.store(Y + y_base + offs_c[:, None] * stride_yc + l[None, :].to(tl.int64) * stride_yl,
                 y.to(Y.dtype.element_ty), mask=mask)


def flat_spatial_stride(x: torch.Tensor) -> int | None:
    """Stride of the flattened spatial axes of (N, C, *spatial), or None when they do not
    flatten to one uniformly strided axis (then the caller makes x contiguous)."""
    sizes, strides = x.shape[2:], x.stride()[2:]
    dims = [(s, st) for s, st in zip(sizes, strides) if s != 1]
    if not dims:
        return 1
    for (_, outer), (size, inner) in itertools.pairwise(dims):
        if outer != inner * size:
            return None
    return dims[-1][1]


def _check(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, bias_in: torch.Tensor | None):
    if x.dim() < 3:
        raise ValueError(f"x must be (N, C, *spatial), got shape {tuple(x.shape)}")
    n, c = x.shape[:2]
    if c % groups:
        raise ValueError(f"{c} channels do not split into {groups} groups")
    if weight.shape != (c,) or bias.shape != (c,):
        raise ValueError(f"weight/bias must be ({c},), got {tuple(weight.shape)}, {tuple(bias.shape)}")
    if bias_in is not None:
        length = x[0, 0].numel()
        if bias_in.dim() != 3 or bias_in.shape[:2] != (n, c) or length % bias_in.shape[2]:
            raise ValueError(f"bias_in must be (N={n}, C={c}, K) with K dividing {length}, got {tuple(bias_in.shape)}")


def group_norm_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float,
                      silu: bool = False, bias_in: torch.Tensor | None = None) -> torch.Tensor:
    """Fused GroupNorm of x (N, C, *spatial) (+ bias_in (N, C, K) before, SiLU after). Returns a
    new tensor with x's layout (channels-last stays channels-last)."""
    import torch

    _check(x, weight, bias, groups, bias_in)
    if x.device.type != "cuda" and not interpreted():
        raise BackendUnavailableError(f"the Triton GroupNorm kernel needs CUDA tensors, got {x.device} "
                                      "(or TRITON_INTERPRET=1 set before Triton is imported)")
    if flat_spatial_stride(x) is None:
        x = x.contiguous()
    y = torch.empty_like(x)  # dense x: same strides
    n, c = x.shape[:2]
    length = x[0, 0].numel()
    bias_arg, b_strides, seg_len = x, (0, 0, 0), length
    if bias_in is not None:
        bias_arg, b_strides, seg_len = bias_in, bias_in.stride(), length // bias_in.shape[2]
    per_group = c // groups
    block_c = triton.next_power_of_2(per_group)
    block_l = max(16, min(triton.next_power_of_2(length), 4096 // block_c))
    _group_norm_fwd[(n * groups,)](
        x, y, weight, bias, bias_arg,
        x.stride(0), x.stride(1), flat_spatial_stride(x),
        y.stride(0), y.stride(1), flat_spatial_stride(y),
        *b_strides,
        c, length, seg_len, groups, eps,
        HAS_BIAS=bias_in is not None, SILU=silu, BLOCK_C=block_c, BLOCK_L=block_l,
        num_warps=4,
    )
    return y


def reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float,
              silu: bool = False, bias_in: torch.Tensor | None = None) -> torch.Tensor:
    """Plain PyTorch, statistics in fp32 (sgm `GroupNorm32`): y in x's dtype."""
    import torch.nn.functional as F

    h = x
    if bias_in is not None:
        _n, _c, k = bias_in.shape
        # (N, C, K) -> (N, C, K, 1..) broadcast over each segment of the flattened spatial axes
        h = (x.flatten(2).unflatten(2, (k, -1)) + bias_in[..., None]).reshape(x.shape)
    y = F.group_norm(h.float(), groups, weight.float(), bias.float(), eps)
    if silu:
        y = F.silu(y)
    return y.to(x.dtype)

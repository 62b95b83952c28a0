"""Packed self-attention projections: one qkv GEMM per self-attention site.

Every self-attention (spatial `transformer_blocks.0.attn1`, temporal `time_stack.0.attn1`)
projects q, k, v from the same tokens with three GEMMs; one GEMM against the stacked
(3C, C) weight reads the activation once. q, k, v are then strided views of its output, which
SDPA and the temporal kernel (`kernels.temporal_attention`: any strides, native
(B*T, H*W, heads, d) layout, no regroup on CUDA) read as they are.

In place on a weight-sharing copy of a VideoUNet. The stacked weight is new memory (3C^2 per
site, about 5 % of the UNet); to_q/to_k/to_v stay in place as the reference's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels import temporal_attention
from ..models.attention import (
    BasicTransformerBlock,
    CrossAttention,
    TemporalSelfAttention,
    VideoTransformerBlock,
)


def _pack(attn: CrossAttention) -> None:
    weight = torch.cat([attn.to_q.weight, attn.to_k.weight, attn.to_v.weight])  # (3 inner, C)
    attn.register_buffer("qkv_weight", weight, persistent=False)


class PackedSelfAttention(CrossAttention):
    """Spatial self-attention (context None) with one qkv GEMM."""

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        # x: (N, L, C)
        q, k, v = (self.split_heads(t).transpose(1, 2) for t in F.linear(x, self.qkv_weight).chunk(3, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v)  # (N, heads, L, d)
        return self.to_out(out.transpose(1, 2).flatten(2))  # (N, L, C)


class NativeTemporalAttention(TemporalSelfAttention):
    """Temporal self-attention with one qkv GEMM and the fused native-layout kernel."""

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        # x: (B*T, S, C)
        q, k, v = (self.split_heads(t) for t in F.linear(x, self.qkv_weight).chunk(3, dim=-1))  # (B*T, S, heads, d)
        return self.to_out(temporal_attention(q, k, v, frames).flatten(2))  # (B*T, S, C)


def pack_attention(unet: nn.Module) -> None:
    """In place on a weight-sharing copy of a VideoUNet (folded or not)."""
    for module in list(unet.modules()):
        if isinstance(module, BasicTransformerBlock) and type(module.attn1) is CrossAttention:
            _pack(module.attn1)
            module.attn1.__class__ = PackedSelfAttention
        elif isinstance(module, VideoTransformerBlock) and type(module.attn1) is TemporalSelfAttention:
            _pack(module.attn1)
            module.attn1.__class__ = NativeTemporalAttention

"""Transformer blocks of the SV3D VideoUNet: spatial and temporal attention per attention site.

Numerics follow sgm `attention.py` (CrossAttention, FeedForward/GEGLU, BasicTransformerBlock)
and `video_attention.py` (VideoTransformerBlock, SpatialVideoTransformer); sv3d.md §1.5-1.7.

Every tensor stays in the native token layout (B*T, H*W, C). The reference regroups tokens to
(B*H*W, T, C) for the whole temporal block, but only its self-attention mixes frames: LayerNorms
and feed-forwards are per token, and the temporal cross-attention sees one context per video
(the first frame's). So the regrouping is confined to `temporal_self_attention`, the one
function a fused kernel replaces.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .unet_blocks import AlphaBlender, timestep_embedding

# max_ddpm_temb_period of the reference: period of the frame-index sinusoid.
FRAME_EMBED_PERIOD = 10000
# GroupNorm eps of the transformer entry (sgm `Normalize`), unlike the 1e-5 of the ResBlocks.
TRANSFORMER_NORM_EPS = 1e-6


def temporal_self_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, frames: int) -> torch.Tensor:
    """Softmax attention across the frames of each video at each spatial location.

    q, k, v: (B*T, S, heads, d) in the native frame-major layout. Returns (B*T, S, heads, d).
    Scale 1/sqrt(d) (SDPA default = xformers default of the reference). Dispatches to
    `sv3d_trt.kernels.temporal_attention`: the fused Triton kernel on CUDA (no regroup
    copies), the plain regroup + SDPA reference elsewhere, and a `sv3d_trt::TemporalAttention`
    node inside an ONNX export with plugins on.
    """
    from ..kernels import temporal_attention

    return temporal_attention(q, k, v, frames)


class CrossAttention(nn.Module):
    """sgm `CrossAttention`: bias-free q/k/v projections, SDPA, output Linear with bias.

    Self-attention when `context` is None. With SV3D's one-token context the output equals
    to_out(to_v(ctx)) for every query (sv3d.md §1.7); that fold is an external transform, this
    module computes the real attention and stays the reference.
    """

    def __init__(self, query_dim: int, context_dim: int, heads: int, dim_head: int):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim))  # .1 was Dropout(0); unkeyed

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1))  # (N, L, heads, d)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        # x: (N, L, C); context: (N, M, C_ctx) or None
        ctx = x if context is None else context
        q, k, v = (self.split_heads(f(y)).transpose(1, 2) for f, y in ((self.to_q, x), (self.to_k, ctx), (self.to_v, ctx)))
        out = F.scaled_dot_product_attention(q, k, v)  # (N, heads, L, d)
        return self.to_out(out.transpose(1, 2).flatten(2))  # (N, L, C)


class TemporalSelfAttention(CrossAttention):
    """Self-attention over the T frames of each video (key prefix `time_stack.0.attn1`)."""

    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__(dim, dim, heads, dim_head)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        # x: (B*T, S, C)
        q, k, v = (self.split_heads(f(x)) for f in (self.to_q, self.to_k, self.to_v))  # (B*T, S, heads, d)
        return self.to_out(temporal_self_attention(q, k, v, frames).flatten(2))  # (B*T, S, C)


class GEGLU(nn.Module):
    """Linear to 2*inner, split [value | gate], value * GELU(gate) with exact erf GELU."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, 2 * dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """sgm `FeedForward(glu=True, mult=4)`: keys `net.0.proj`, `net.2`."""

    def __init__(self, dim: int):
        super().__init__()
        inner = 4 * dim
        self.net = nn.Sequential(GEGLU(dim, inner), nn.Identity(), nn.Linear(inner, dim))  # .1 was Dropout(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """Spatial block, per frame over H*W tokens: self-attn, cross-attn, GEGLU FF, pre-LN residuals.

    Registration order (attn1, ff, attn2, norms) is the reference's, so state_dict order matches.
    """

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int):
        super().__init__()
        self.attn1 = CrossAttention(dim, dim, heads, dim_head)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, context_dim, heads, dim_head)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        # x: (B*T, S, C); context: (B*T, M, C_ctx)
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class VideoTransformerBlock(nn.Module):
    """Temporal block (key prefix `time_stack.0`): ff_in, self-attn over frames, cross-attn, FF.

    Works in the native (B*T, S, C) layout; `time_context` is already one context per frame
    holding its video's first-frame context (sv3d.md §1.5).
    """

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int):
        super().__init__()
        self.norm_in = nn.LayerNorm(dim)
        self.ff_in = FeedForward(dim)
        self.attn1 = TemporalSelfAttention(dim, heads, dim_head)
        self.ff = FeedForward(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = CrossAttention(dim, context_dim, heads, dim_head)
        self.norm1 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, time_context: torch.Tensor, frames: int) -> torch.Tensor:
        # x: (B*T, S, C); time_context: (B*T, M, C_ctx)
        x = self.ff_in(self.norm_in(x)) + x  # residual since inner_dim == dim
        x = self.attn1(self.norm1(x), frames) + x
        x = self.attn2(self.norm2(x), time_context) + x
        return self.ff(self.norm3(x)) + x


class SpatialVideoTransformer(nn.Module):
    """sgm `SpatialVideoTransformer` (depth 1, linear proj_in/out, spatial context reused in time).

    x + proj_out(a*s + (1-a)*temporal(s + frame_emb)), s = spatial block(proj_in(norm(x))).
    """

    def __init__(self, channels: int, heads: int, dim_head: int, context_dim: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=TRANSFORMER_NORM_EPS)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(channels, heads, dim_head, context_dim)])
        self.proj_out = nn.Linear(channels, channels)
        self.time_stack = nn.ModuleList([VideoTransformerBlock(channels, heads, dim_head, context_dim)])
        self.time_pos_embed = nn.Sequential(
            nn.Linear(channels, 4 * channels), nn.SiLU(), nn.Linear(4 * channels, channels)
        )
        self.time_mixer = AlphaBlender()

    def frame_embedding(self, n: int, frames: int) -> torch.Tensor:
        """time_pos_embed(sinusoid(frame index)) for each of the n = B*T rows: (B*T, 1, C)."""
        weight = self.proj_in.weight
        frame_index = torch.arange(frames, device=weight.device).repeat(n // frames)  # (B*T,)
        emb = timestep_embedding(frame_index, weight.shape[0], FRAME_EMBED_PERIOD).to(weight.dtype)
        return self.time_pos_embed(emb)[:, None, :]

    def forward(self, x: torch.Tensor, context: torch.Tensor, frames: int) -> torch.Tensor:
        # x: (B*T, C, H, W); context: (B*T, M, C_ctx)
        n, c, h, w = x.shape
        x_in = x

        # 1. The temporal block's context is each video's first-frame context (use_spatial_context).
        first = context.view(n // frames, frames, *context.shape[1:])[:, :1]  # (B, 1, M, C_ctx)
        time_context = first.expand(-1, frames, -1, -1).reshape(context.shape)  # (B*T, M, C_ctx)

        # 2. Tokens.
        x = self.norm(x).flatten(2).transpose(1, 2)  # (B*T, H*W, C)
        x = self.proj_in(x)

        # 3. Frame-index embedding: sinusoid(0..T-1), one row per frame of every video.
        frame_emb = self.frame_embedding(n, frames)  # (B*T, 1, C)

        # 4. Spatial block, temporal block on the frame-tagged copy, learned blend.
        x = self.transformer_blocks[0](x, context)
        x_mix = self.time_stack[0](x + frame_emb, time_context, frames)
        x = self.time_mixer(x, x_mix)

        # 5. Back to the image layout, residual.
        x = self.proj_out(x).transpose(1, 2).reshape(n, c, h, w)  # (B*T, C, H, W)
        return x + x_in

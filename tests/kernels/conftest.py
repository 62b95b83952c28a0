"""A tiny stand-in for the UNet's temporal self-attention sites, shaped by the tiny config."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sv3d_trt.kernels import temporal_attention
from sv3d_trt.models.config import get_config


class TemporalSites(nn.Module):
    """One packed-qkv projection + temporal attention per UNet attention level (and the middle
    block), on a (B*T, H*W, C) token stream per level, as the SpatialVideoTransformers see it."""

    def __init__(self, cfg):
        super().__init__()
        u = cfg.unet
        self.frames = u.num_frames
        self.head_dim = u.num_head_channels
        widths = [u.model_channels * u.channel_mult[i] for i in u.attention_levels]
        widths.append(u.model_channels * u.channel_mult[-1])  # middle block
        self.qkv = nn.ModuleList(nn.Linear(c, 3 * c, bias=False) for c in widths)

    def forward(self, *tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = []
        for proj, x in zip(self.qkv, tokens):  # x: (B*T, H*W, C)
            q, k, v = (t.unflatten(-1, (-1, self.head_dim)) for t in proj(x).chunk(3, dim=-1))
            outs.append(temporal_attention(q, k, v, self.frames).flatten(2))  # (B*T, H*W, C)
        return tuple(outs)


@pytest.fixture
def tiny_sites():
    """(module with random weights, random inputs at the tiny config's four attention sizes)."""
    cfg = get_config("tiny")
    u = cfg.unet
    torch.manual_seed(0)
    model = TemporalSites(cfg).eval()
    side = cfg.latent_size
    sizes = [side // 2**i for i in u.attention_levels] + [side // 2 ** (len(u.channel_mult) - 1)]
    inputs = tuple(
        torch.randn(2 * u.num_frames, s * s, lin.in_features) for s, lin in zip(sizes, model.qkv)
    )
    return model, inputs

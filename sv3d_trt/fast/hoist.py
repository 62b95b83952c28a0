"""Hoist the conditioning-invariant work of a denoise step out of the loop.

Per step, the reference UNet recomputes things that never change within a generation:
- every SpatialVideoTransformer's frame-index embedding time_pos_embed(sinusoid(0..T-1)),
  a constant of the weights (16 sinusoids + 32 GEMMs + 16 SiLUs per step at full size);
- every time mixer's alpha = sigmoid(mix_factor) (38 sigmoids and casts per step);
- label_emb(y): y (cond_aug + cameras) is fixed for a generation, so `label_embedding` computes it
  once per generation and the UNet's label_emb becomes the identity on that input;
- time_embed(sinusoid(c_noise)) for all 2T rows, which are equal: the step passes ONE timestep
  row and the sum time_embed(...) + label broadcasts it (`one_time_row`).

Applied in place to a weight-sharing copy of a VideoUNet (see `fast.runtime_unet`); each result
equals the reference's value exactly (same ops, same dtype), only computed once.
"""
from __future__ import annotations

import torch
from torch import nn

from ..models.attention import SpatialVideoTransformer
from ..models.unet_blocks import AlphaBlender
from .blender import Blender, as_blender


class HoistedSpatialVideoTransformer(SpatialVideoTransformer):
    """SpatialVideoTransformer reading its frame embedding from the `frame_emb` buffer (T, C)."""

    def frame_embedding(self, n: int, frames: int) -> torch.Tensor:
        return self.frame_emb.repeat(n // frames, 1)[:, None, :]  # (B*T, 1, C)


@torch.no_grad()
def frame_embedding(svt: SpatialVideoTransformer, frames: int) -> torch.Tensor:
    """time_pos_embed(sinusoid(0..T-1)) in the weights' dtype, as the reference computes per call: (T, C)."""
    return SpatialVideoTransformer.frame_embedding(svt, frames, frames)[:, 0]


def hoist_invariants(unet: nn.Module) -> None:
    """In place on a weight-sharing copy of a VideoUNet: frame embeddings and alphas become
    buffers, label_emb the identity (feed it `label_embedding(original_label_emb, y)`)."""
    frames = unet.config.num_frames
    for module in list(unet.modules()):
        if isinstance(module, SpatialVideoTransformer) and not isinstance(module, HoistedSpatialVideoTransformer):
            table = frame_embedding(module, frames)
            module.__class__ = HoistedSpatialVideoTransformer
            module.register_buffer("frame_emb", table, persistent=False)  # (T, C)
        for name, child in list(module.named_children()):
            if isinstance(child, (AlphaBlender, Blender)):
                blender = as_blender(child)
                if not blender.hoisted:
                    blender.hoist()
                setattr(module, name, blender)
    unet.label_emb = nn.Identity()


@torch.no_grad()
def label_embedding(label_emb: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """label_emb(y) of the ORIGINAL module, as VideoUNet.forward computes it: (N, 4 mc)."""
    return label_emb(y.to(label_emb[0][0].weight.dtype))

"""The runtime UNet: the reference VideoUNet with the `FastOptions` transforms applied from
outside (gpt-fast's `convert_for_runtime`), plus the per-generation conditioning it consumes.

    RuntimeUNet(plain_unet, options)
        .conditioning(clip_embedding, vector) -> per-generation tensors (CFG batch: uncond, cond)
        .forward(x, timesteps, *conditioning) -> (2T, 4, h, w), the plain UNet's output

The plain model is untouched: the runtime one is a weight-sharing copy whose modules were
swapped (fold, hoist, fuse, packed attention) or re-laid out (channels-last, new conv weights).
Conditioning layout: the CFG batch stacks T uncond rows (CLIP context and concat latent
zeroed, sv3d.md §4.5) over T cond rows, as `TorchEagerBackend.prepare` does.
"""
from __future__ import annotations

import torch
from torch import nn

from ..models.fold import (
    attn2_modules,
    attn2_outputs,
    copy_sharing_weights,
    fold_cross_attention,
)
from .attention import pack_attention
from .fuse import fuse_kernels
from .hoist import hoist_invariants, label_embedding
from .layout import channels_last
from .options import FastOptions


class RuntimeUNet(nn.Module):
    def __init__(self, unet: nn.Module, options: FastOptions):
        super().__init__()
        self.options = options
        self.num_frames = unet.config.num_frames
        self.dtype = unet.time_embed[0].weight.dtype
        # 1. fold first: it makes the weight-sharing copy the other transforms edit in place
        if options.fold:
            self.net = fold_cross_attention(unet)
            body = self.net.unet
            self.attn2 = nn.ModuleList(attn2_modules(unet).values())  # the originals: to_v, to_out per image
        else:
            self.net = body = copy_sharing_weights(unet)
        if options.hoist:
            self.label_emb = unet.label_emb  # the original: label_emb(y) once per generation
            hoist_invariants(body)
        if options.fused_kernels:
            fuse_kernels(body)
        if options.packed_attention:
            pack_attention(body)
        if options.channels_last:
            channels_last(body)

    @torch.no_grad()
    def conditioning(self, clip_embedding: torch.Tensor, vector: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per-generation inputs of `forward` after the first two.

        clip_embedding: (1, D); vector: (T, adm). Returns (context..., label): with the fold, the 32
        attn2 outputs (2, C_i) (row 0 uncond, row 1 cond) in fold order; without it, the context
        (2T, 1, D). label: label_emb(y) (2T, 4 mc) when hoisted, else y (2T, adm).
        """
        T = self.num_frames
        clip = clip_embedding.to(self.dtype)
        if self.options.fold:
            context = tuple(attn2_outputs(self.attn2, clip))
        else:
            context = (torch.cat([torch.zeros_like(clip).expand(T, -1), clip.expand(T, -1)])[:, None],)
        y = torch.cat([vector, vector]).to(self.dtype)  # the vector is shared by both halves
        label = label_embedding(self.label_emb, y) if self.options.hoist else y
        return (*context, label)

    @property
    def one_time_row(self) -> bool:
        """Whether forward takes ONE c_noise row (hoisted: time_embed runs once, then broadcasts)."""
        return self.options.hoist

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, *conditioning: torch.Tensor) -> torch.Tensor:
        """x: (2T, 8, h, w) in the weights' dtype; timesteps: (1,) if `one_time_row` else (2T,).
        Returns (2T, 4, h, w)."""
        *context, label = conditioning
        if self.options.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.options.fold:
            return self.net(x, timesteps, label, context)
        return self.net(x, timesteps, context[0], label)

"""Fused glue kernels in the UNet: GroupNorm(+emb add, +SiLU), LayerNorm, GEGLU, blend(+residual).

In place on a weight-sharing copy of a VideoUNet, modules become subclasses whose forward calls
`kernels.fused_ops` (Triton on CUDA, the plain-torch references elsewhere); parameters and
state-dict keys are untouched. Where the reference runs GroupNorm32 then SiLU, the SiLU slot
becomes an Identity (the Sequential indices stay the checkpoint's).

ResBlocks fold their time-embedding add into the second norm (`bias_in`), and a VideoResBlock's
blend takes the temporal ResBlock's residual branch h and the skip s apart: a s + (1 - a)(s + h)
in one pass (sgm: t = skip(s) + h, then AlphaBlender(s, t)).
"""
from __future__ import annotations

import torch
from torch import nn

from ..kernels import fused_ops
from ..models.attention import GEGLU, SpatialVideoTransformer
from ..models.unet_blocks import AlphaBlender, GroupNorm32, ResBlock, VideoResBlock
from .blender import Blender, as_blender


class FusedGroupNorm(nn.GroupNorm):
    """GroupNorm with fp32 statistics (GroupNorm32's numerics), optional SiLU, optional pre-add."""

    silu: bool = False

    def forward(self, x: torch.Tensor, bias_in: torch.Tensor | None = None) -> torch.Tensor:
        # x: (N, C, *spatial); bias_in: (N, C, K)
        return fused_ops.group_norm(x, self.weight, self.bias, self.num_groups, self.eps, self.silu, bias_in)


class FusedLayerNorm(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_ops.layer_norm(x, self.weight, self.bias, self.eps)


class FusedGEGLU(GEGLU):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_ops.geglu(self.proj(x))  # (N, L, inner)


class FusedResBlock(ResBlock):
    """ResBlock with in_layers/out_layers norms fused with their SiLU and the emb add."""

    def branch(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Everything but the skip: conv(GN-SiLU(conv(GN-SiLU(x)) + emb))."""
        h = self.in_layers(x)
        e = self.emb_layers(emb).to(h.dtype)  # (N, C) or (B, T, C)
        e = e[:, :, None] if self.dims == 2 else e.transpose(1, 2)  # (N, C, 1) or (B, C, T)
        h = self.out_layers[0](h, bias_in=e)  # FusedGroupNorm(+SiLU); [1], [2] are Identity
        return self.out_layers[3](h)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.skip_connection(x) + self.branch(x, emb)


class FusedVideoResBlock(VideoResBlock, FusedResBlock):
    """VideoResBlock whose blend takes the temporal residual branch and the skip apart."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor, frames: int) -> torch.Tensor:
        # x: (B*T, C_in, H, W); emb: (B*T, E)
        s = FusedResBlock.forward(self, x, emb)  # (B*T, C, H, W)
        n, c, hh, ww = s.shape
        s = s.view(n // frames, frames, c, hh, ww).transpose(1, 2)  # (B, C, T, H, W)
        h = self.time_stack.branch(s, emb.view(n // frames, frames, -1))  # (B, C, T, H, W); skip is identity
        out = self.time_mixer(s, h, residual=s)  # a s + (1 - a)(s + h)
        return out.transpose(1, 2).reshape(n, c, hh, ww)  # (B*T, C, H, W)


def _fuse_norm_silu(seq: nn.Sequential) -> None:
    """[GroupNorm32, SiLU, ...] -> [FusedGroupNorm(silu), Identity, ...]."""
    norm = seq[0]
    if not (isinstance(norm, GroupNorm32) and isinstance(seq[1], nn.SiLU)):
        raise TypeError(f"expected GroupNorm32 then SiLU, got {type(norm).__name__}, {type(seq[1]).__name__}")
    norm.__class__ = FusedGroupNorm
    norm.silu = True
    seq[1] = nn.Identity()


def fuse_kernels(unet: nn.Module) -> None:
    """In place on a weight-sharing copy of a VideoUNet (hoisted or not)."""
    for module in list(unet.modules()):
        if isinstance(module, ResBlock) and not isinstance(module, FusedResBlock):
            _fuse_norm_silu(module.in_layers)
            _fuse_norm_silu(module.out_layers)
            if isinstance(module, VideoResBlock):
                module.__class__ = FusedVideoResBlock
            else:
                module.__class__ = FusedResBlock
        elif isinstance(module, SpatialVideoTransformer) and type(module.norm) is nn.GroupNorm:
            module.norm.__class__ = FusedGroupNorm  # silu stays False
        elif type(module) is nn.LayerNorm:
            module.__class__ = FusedLayerNorm
        elif type(module) is GEGLU:
            module.__class__ = FusedGEGLU
        for name, child in list(module.named_children()):
            if isinstance(child, (AlphaBlender, Blender)):
                blender = as_blender(child)
                blender.fused = True
                setattr(module, name, blender)
    if isinstance(unet.out[0], GroupNorm32):
        _fuse_norm_silu(unet.out)

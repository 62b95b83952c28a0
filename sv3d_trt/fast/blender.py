"""The learned spatial/temporal blend of the fast UNet (sgm `AlphaBlender` with its alpha
computed once and, optionally, with the fused kernel).

`hoist` precomputes alpha = sigmoid(mix_factor) (one tiny kernel and a cast per block per step
otherwise); `fused_kernels` routes the arithmetic through `sv3d_trt::blend`, which also folds
the temporal ResBlock's residual in. Both keep the reference's arithmetic: alpha in the
weights' dtype, a s + (1 - a) t.
"""
from __future__ import annotations

import torch
from torch import nn

from ..kernels import blend as blend_kernel
from ..kernels import fused_ops
from ..models.unet_blocks import AlphaBlender


class Blender(nn.Module):
    """Replaces an AlphaBlender; shares its `mix_factor` parameter (same state-dict key)."""

    def __init__(self, mix_factor: nn.Parameter, hoisted: bool = False, fused: bool = False):
        super().__init__()
        self.mix_factor = mix_factor
        self.fused = fused
        self.hoisted = False
        if hoisted:
            self.hoist()

    def hoist(self) -> None:
        # Not persistent: derived from mix_factor, never a checkpoint key.
        self.register_buffer("alpha", torch.sigmoid(self.mix_factor).detach().clone(), persistent=False)  # (1,)
        self.hoisted = True

    def forward(self, spatial: torch.Tensor, temporal: torch.Tensor, residual: torch.Tensor | None = None):
        alpha = self.alpha if self.hoisted else torch.sigmoid(self.mix_factor)
        if self.fused:
            return fused_ops.blend(spatial, temporal, alpha, residual)
        return blend_kernel.reference(spatial, temporal, alpha, residual)


def as_blender(module: nn.Module) -> Blender:
    """The Blender standing for `module` (an AlphaBlender is replaced, a Blender kept)."""
    if isinstance(module, Blender):
        return module
    if isinstance(module, AlphaBlender):
        return Blender(module.mix_factor)
    raise TypeError(f"not a blender: {type(module).__name__}")

"""The whole CFG-guided Euler step as one module on device tensors (sv3d.md §5).

Same math as `TorchEagerBackend.step`, ending in the same `sampler.guided_euler_step`, but
every scalar (sigma, sigma_next) is a 0-d device tensor, so the last step's `sigma_next == 0`
choice is an elementwise select: no host value is read, so the step captures as a CUDA graph
and the loop never syncs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..sampler import guided_euler_step, precondition
from .runtime_unet import RuntimeUNet


@dataclass
class FastState:
    """Per-generation inputs of the step, on the device."""

    concat: torch.Tensor  # (2T, 4, h, w) in the UNet dtype: zeros (uncond) over the VAE latent (cond)
    conditioning: tuple[torch.Tensor, ...]  # RuntimeUNet.conditioning(...)
    cfg_scales: torch.Tensor  # (T, 1, 1, 1) float32

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.concat, self.cfg_scales, *self.conditioning)


class CFGEulerStep(nn.Module):
    def __init__(self, unet: nn.Module, one_time_row: bool):
        super().__init__()
        self.unet = unet  # a RuntimeUNet, possibly torch.compiled
        self.one_time_row = one_time_row

    @classmethod
    def over(cls, unet: RuntimeUNet, compiled: nn.Module | None = None) -> CFGEulerStep:
        return cls(compiled if compiled is not None else unet, unet.one_time_row)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor, concat: torch.Tensor,
                cfg_scales: torch.Tensor, *conditioning: torch.Tensor) -> torch.Tensor:
        """x: (T, 4, h, w) fp32; sigma, sigma_next: 0-d fp32 tensors. Returns x_next (T, 4, h, w) fp32."""
        # 1. EDM preconditioning of both CFG halves at once
        c_skip, c_out, c_in, c_noise = precondition(sigma)
        xx = torch.cat([x, x])  # (2T, 4, h, w)
        unet_in = torch.cat([(xx * c_in).to(concat.dtype), concat], dim=1)  # (2T, 8, h, w)
        rows = 1 if self.one_time_row else xx.shape[0]
        t = c_noise.reshape(1).expand(rows).to(concat.dtype)  # rounded to the UNet dtype, as the reference
        # 2. network and denoised prediction of both halves (fp32)
        out = self.unet(unet_in, t, *conditioning).float()
        d = out * c_out + xx * c_skip
        # 3. triangular guidance and the Euler update (the last step returns the guided D exactly)
        return guided_euler_step(x, *d.chunk(2), sigma, sigma_next, cfg_scales)

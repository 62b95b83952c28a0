"""Convolutional blocks of the SV3D VideoUNet: sinusoid embedding, ResBlocks, resampling.

Numerics follow sgm (generative-models) `openaimodel.py`, `video_model.py` and
`diffusionmodules/util.py` (sv3d.md §1.3, §1.4). Attribute names are the checkpoint's, so
`nn.Identity` stands where the reference has a Dropout: it keeps the Sequential indices
(`out_layers.3`, `ff.net.2`) of the official keys.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# video_kernel_size [3, 1, 1] of the sv3d yaml: the temporal ResBlock mixes 3 neighbouring frames.
TEMPORAL_KERNEL = 3
# merge_factor of the yaml: initial value of every learned `time_mixer.mix_factor` (the checkpoint overrides it).
MERGE_FACTOR = 0.5


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000) -> torch.Tensor:
    """Sinusoid of sgm `util.timestep_embedding`: [cos(t*f), sin(t*f)], f_i = max_period^(-i/half).

    t: (N,) any float/int dtype. Returns (N, dim) fp32 (cos first; odd dim padded with a zero column).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]  # (N, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class AlphaBlender(nn.Module):
    """sgm `AlphaBlender` ('learned_with_images') with image_only_indicator == 0.

    The indicator is always zero at inference, so alpha = sigmoid(mix_factor) for every frame and
    the reference's per-(video, frame) rearrange collapses to a scalar broadcast.
    """

    def __init__(self):
        super().__init__()
        self.mix_factor = nn.Parameter(torch.full((1,), MERGE_FACTOR))

    def forward(self, spatial: torch.Tensor, temporal: torch.Tensor) -> torch.Tensor:
        alpha = torch.sigmoid(self.mix_factor)  # (1,) in the weights' dtype, as the reference
        return alpha.to(spatial.dtype) * spatial + (1.0 - alpha).to(spatial.dtype) * temporal


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in fp32 and cast back (sgm `GroupNorm32`), so fp16/bf16 weights keep fp32 statistics."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.float()
        b = self.bias.float()
        return F.group_norm(x.float(), self.num_groups, w, b, self.eps).to(x.dtype)


class ResBlock(nn.Module):
    """sgm `ResBlock` without scale-shift: GN-SiLU-conv, + emb projection, GN-SiLU-conv, + skip.

    dims=2 is the per-frame spatial block; dims=3 is `time_stack`, a (3,1,1) Conv3d over frames
    whose GroupNorm statistics pool all frames of a video (sv3d.md §1.4). For dims=3 the emb
    arrives per video as (B, T, E) and is added as (B, C, T, 1, 1) (`exchange_temb_dims`).
    """

    def __init__(self, channels: int, emb_channels: int, out_channels: int, dims: int, groups: int):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        kernel = 3 if dims == 2 else (TEMPORAL_KERNEL, 1, 1)
        padding = 1 if dims == 2 else (TEMPORAL_KERNEL // 2, 0, 0)
        self.dims = dims
        self.in_layers = nn.Sequential(
            GroupNorm32(groups, channels), nn.SiLU(), conv(channels, out_channels, kernel, padding=padding)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(
            GroupNorm32(groups, out_channels),
            nn.SiLU(),
            nn.Identity(),  # Dropout(0) in the reference
            conv(out_channels, out_channels, kernel, padding=padding),
        )
        if out_channels == channels:
            self.skip_connection = nn.Identity()
        else:
            self.skip_connection = conv(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        # x: (N, C, H, W) for dims=2 with emb (N, E); (B, C, T, H, W) for dims=3 with emb (B, T, E)
        h = self.in_layers(x)
        e = self.emb_layers(emb).to(h.dtype)  # (N, C) or (B, T, C)
        if self.dims == 2:
            e = e[:, :, None, None]  # (N, C, 1, 1)
        else:
            e = e.transpose(1, 2)[:, :, :, None, None]  # (B, C, T, 1, 1)
        h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class VideoResBlock(ResBlock):
    """Spatial ResBlock per frame, then a temporal ResBlock over frames, blended by a learned alpha.

    sgm `VideoResBlock`: out = a*s + (1-a)*time_stack(s), a = sigmoid(time_mixer.mix_factor).
    """

    def __init__(self, channels: int, emb_channels: int, out_channels: int, groups: int):
        super().__init__(channels, emb_channels, out_channels, dims=2, groups=groups)
        self.time_stack = ResBlock(out_channels, emb_channels, out_channels, dims=3, groups=groups)
        self.time_mixer = AlphaBlender()

    def forward(self, x: torch.Tensor, emb: torch.Tensor, frames: int) -> torch.Tensor:
        # x: (B*T, C_in, H, W); emb: (B*T, E)
        s = super().forward(x, emb)  # (B*T, C, H, W)
        n, c, hh, ww = s.shape
        s = s.view(n // frames, frames, c, hh, ww).transpose(1, 2)  # (B, C, T, H, W)
        t = self.time_stack(s, emb.view(n // frames, frames, -1))  # (B, C, T, H, W)
        out = self.time_mixer(s, t)
        return out.transpose(1, 2).reshape(n, c, hh, ww)  # (B*T, C, H, W)


class Downsample(nn.Module):
    """3x3 conv, stride 2, padding 1 (sgm `Downsample`, conv_resample=True)."""

    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)  # (N, C, H/2, W/2)


class Upsample(nn.Module):
    """Nearest x2 then 3x3 conv (sgm `Upsample`, conv_resample=True)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))  # (N, C, 2H, 2W)

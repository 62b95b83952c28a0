"""SV3D's KL autoencoder: the conditioning encoder and the image decoder (sv3d.md §3).

Two checkpoint groups use this architecture (sv3d.md §2.1):
- `conditioner.embedders.1.encoder.{encoder,quant_conv}.*`: encodes the input view; SV3D keeps
  only the MODE of the diagonal Gaussian posterior (its mean) as the UNet's concat latent.
- `first_stage_model.decoder.*`: the per-frame IMAGE decoder (sgm `Decoder`, not SVD's temporal
  VideoDecoder). Its engine has no post_quant_conv, so it decodes z directly.

Submodule names equal the sgm `Encoder`/`Decoder` keys (`down.{i}.block.{j}`, `mid.attn_1.q`, ...)
so a checkpoint slice loads with `load_state_dict` and no renaming table.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sv3d_trt.models.config import VAEConfig

# sgm `Normalize`: GroupNorm with eps 1e-6 (not torch's default 1e-5).
NORM_EPS = 1e-6


def group_norm(cfg: VAEConfig, channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(cfg.norm_groups, channels, eps=NORM_EPS, affine=True)


class ResnetBlock(nn.Module):
    """norm-SiLU-conv twice plus a residual; a 1x1 `nin_shortcut` when the width changes. No time embedding."""

    def __init__(self, cfg: VAEConfig, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = group_norm(cfg, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(cfg, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C_in, H, W) -> (N, C_out, H, W)
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all H*W positions with 1x1-conv projections.

    The reference uses xformers' memory_efficient_attention on (N, H*W, C), i.e. one head of
    width C and scale 1/sqrt(C) — exactly scaled_dot_product_attention's default here.
    """

    def __init__(self, cfg: VAEConfig, channels: int):
        super().__init__()
        self.norm = group_norm(cfg, channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W)
        n, c, height, width = x.shape
        h = self.norm(x)
        # (N, C, H, W) -> (N, 1, H*W, C): one head, tokens = pixels
        q, k, v = (proj(h).reshape(n, 1, c, height * width).transpose(2, 3) for proj in (self.q, self.k, self.v))
        h = F.scaled_dot_product_attention(q, k, v)  # (N, 1, H*W, C)
        h = h.transpose(2, 3).reshape(n, c, height, width)
        return x + self.proj_out(h)


class Downsample(nn.Module):
    """Stride-2 3x3 conv after a zero pad on the right and bottom only (sgm `Downsample`, asymmetric)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, C, H/2, W/2)
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, C, 2H, 2W)
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DownLevel(nn.Module):
    """One encoder resolution: `block.{j}` ResnetBlocks, then `downsample` unless it is the last level."""

    def __init__(self, cfg: VAEConfig, in_channels: int, out_channels: int, downsample: bool):
        super().__init__()
        widths = [in_channels] + [out_channels] * cfg.num_res_blocks
        self.block = nn.ModuleList(ResnetBlock(cfg, a, b) for a, b in zip(widths[:-1], widths[1:]))
        if downsample:
            self.downsample = Downsample(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.block:
            x = block(x)
        if hasattr(self, "downsample"):
            x = self.downsample(x)
        return x


class UpLevel(nn.Module):
    """One decoder resolution: num_res_blocks + 1 ResnetBlocks, then `upsample` unless it is level 0."""

    def __init__(self, cfg: VAEConfig, in_channels: int, out_channels: int, upsample: bool):
        super().__init__()
        widths = [in_channels] + [out_channels] * (cfg.num_res_blocks + 1)
        self.block = nn.ModuleList(ResnetBlock(cfg, a, b) for a, b in zip(widths[:-1], widths[1:]))
        if upsample:
            self.upsample = Upsample(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.block:
            x = block(x)
        if hasattr(self, "upsample"):
            x = self.upsample(x)
        return x


class MidBlock(nn.Module):
    """ResnetBlock, attention, ResnetBlock at the lowest resolution (the VAE's only attention)."""

    def __init__(self, cfg: VAEConfig, channels: int):
        super().__init__()
        self.block_1 = ResnetBlock(cfg, channels, channels)
        self.attn_1 = AttnBlock(cfg, channels)
        self.block_2 = ResnetBlock(cfg, channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    """Image (N, 3, H, W) -> Gaussian moments (N, 2*z_channels, H/8, W/8) (double_z)."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        widths = [cfg.ch * m for m in cfg.ch_mult]
        last = len(widths) - 1
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        self.down = nn.ModuleList(
            DownLevel(cfg, cfg.ch if i == 0 else widths[i - 1], widths[i], downsample=i != last)
            for i in range(len(widths))
        )
        self.mid = MidBlock(cfg, widths[-1])
        self.norm_out = group_norm(cfg, widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], 2 * cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W) -> (N, 2z, H/8, W/8)
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VAEEncoder(nn.Module):
    """Encoder + quant_conv -> posterior mean (AutoencoderKLModeOnly: the mode, never a sample).

    Keys equal the official ones minus `conditioner.embedders.1.encoder.`, limited to
    `encoder.*` and `quant_conv.*`. The result is unscaled: SV3D's concat latent is the raw
    mean (scale 1.0, sv3d.md §4.4); only the diffusion latent uses cfg.scale_factor.
    """

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.quant_conv = nn.Conv2d(2 * cfg.z_channels, 2 * cfg.z_channels, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W) in [-1, 1] -> (N, z, H/8, W/8)
        moments = self.quant_conv(self.encoder(image.to(self.quant_conv.weight.dtype)))  # (N, 2z, H/8, W/8)
        # DiagonalGaussianDistribution splits [mean | logvar] on channels; the logvar is unused.
        return moments[:, : self.cfg.z_channels]


class VAEDecoder(nn.Module):
    """The image decoder: latent (N, z_channels, h, w) -> image (N, 3, 8h, 8w).

    Keys equal the official ones minus `first_stage_model.decoder.`; `up.0` is the
    full-resolution level. Takes z = diffusion latent / scale_factor (the caller divides) and
    returns the raw image, nominally in [-1, 1] but not clamped, as decode_first_stage does.
    """

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        widths = [cfg.ch * m for m in cfg.ch_mult]
        last = len(widths) - 1
        self.conv_in = nn.Conv2d(cfg.z_channels, widths[-1], 3, padding=1)
        self.mid = MidBlock(cfg, widths[-1])
        # Indexed by resolution like the reference (which inserts each new level at index 0), so
        # level i reads the output of level i + 1 and forward walks them from coarse to fine.
        self.up = nn.ModuleList(
            UpLevel(cfg, widths[min(i + 1, last)], widths[i], upsample=i != 0) for i in range(len(widths))
        )
        self.norm_out = group_norm(cfg, widths[0])
        self.conv_out = nn.Conv2d(widths[0], cfg.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (N, z, h, w) -> (N, 3, 8h, 8w)
        h = self.mid(self.conv_in(z.to(self.conv_in.weight.dtype)))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))

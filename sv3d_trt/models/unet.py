"""SV3D VideoUNet (sgm `video_model.VideoUNet`), checkpoint-exact: sv3d.md §1, §2.

State-dict keys equal the official `model.diffusion_model.*` keys with that prefix removed,
in the same order, with the same shapes (1428 tensors). Build on the meta device and load
with `load_state_dict(..., assign=True)`.

The UNet batch is frame-major, N = B*T: frames of one video are consecutive. Inference
always has image_only_indicator == 0, so every learned mix is alpha = sigmoid(mix_factor)
and the argument does not exist here.
"""
from __future__ import annotations

import torch
from torch import nn

from .attention import SpatialVideoTransformer
from .config import UNetConfig
from .unet_blocks import Downsample, GroupNorm32, Upsample, VideoResBlock, timestep_embedding

__all__ = ["VideoUNet", "timestep_embedding"]


class TimestepEmbedSequential(nn.Sequential):
    """One UNet block (`input_blocks.i`, `middle_block`, `output_blocks.i`): feeds each layer what it takes."""

    def forward(self, h: torch.Tensor, emb: torch.Tensor, context: torch.Tensor, frames: int) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, VideoResBlock):
                h = layer(h, emb, frames)
            elif isinstance(layer, SpatialVideoTransformer):
                h = layer(h, context, frames)
            else:
                h = layer(h)
        return h


class VideoUNet(nn.Module):
    """The SV3D denoiser network: c_noise, CLIP context and y vector in, EDM network output out."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.config = cfg
        mc, emb_dim, groups = cfg.model_channels, cfg.time_embed_dim, cfg.norm_groups

        def res(ch_in: int, ch_out: int) -> VideoResBlock:
            return VideoResBlock(ch_in, emb_dim, ch_out, groups)

        def attn(ch: int) -> SpatialVideoTransformer:
            heads = ch // cfg.num_head_channels
            return SpatialVideoTransformer(ch, heads, cfg.num_head_channels, cfg.context_dim, groups)

        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_emb = nn.Sequential(
            nn.Sequential(nn.Linear(cfg.adm_in_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        )

        # Encoder: num_res_blocks x (VRB [+ SVT]) per level, Downsample between levels (sv3d.md §1.2).
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(cfg.in_channels, mc, 3, padding=1))])
        skip_channels = [mc]
        ch = mc
        last = len(cfg.channel_mult) - 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [res(ch, mult * mc)]
                ch = mult * mc
                if level in cfg.attention_levels:
                    layers.append(attn(ch))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_channels.append(ch)
            if level != last:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch)))
                skip_channels.append(ch)

        self.middle_block = TimestepEmbedSequential(res(ch, ch), attn(ch), res(ch, ch))

        # Decoder: num_res_blocks + 1 blocks per level, each eating one skip, Upsample closing a level.
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [res(ch + skip_channels.pop(), mult * mc)]
                ch = mult * mc
                if level in cfg.attention_levels:
                    layers.append(attn(ch))
                if level and i == cfg.num_res_blocks:
                    layers.append(Upsample(ch))
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(GroupNorm32(groups, ch), nn.SiLU(), nn.Conv2d(ch, cfg.out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x: (B*T, 8, h, w); timesteps: (B*T,) c_noise; context: (B*T, 1, context_dim); y: (B*T, adm_in_channels).

        Returns (B*T, 4, h, w) in x's dtype. Computes in the weights' dtype.
        """
        frames = self.config.num_frames
        if x.shape[0] % frames:
            raise ValueError(f"UNet batch {x.shape[0]} is not a multiple of num_frames={frames}")
        dtype = self.time_embed[0].weight.dtype

        # 1. time: emb = time_embed(sinusoid(c_noise)) + label_emb(y), one row per frame.
        t_emb = timestep_embedding(timesteps, self.config.model_channels).to(dtype)  # (N, mc)
        emb = self.time_embed(t_emb) + self.label_emb(y.to(dtype))  # (N, 4*mc)

        # 2. down, keeping every block's output for the skips.
        h = x.to(dtype)
        context = context.to(dtype)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb, context, frames)
            skips.append(h)

        # 3. middle
        h = self.middle_block(h, emb, context, frames)

        # 4. up: running h first, then the skip, along channels.
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, context, frames)

        # 5. out
        return self.out(h).to(x.dtype)  # (N, 4, h, w)

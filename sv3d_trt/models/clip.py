"""OpenCLIP ViT-H/14 image tower and SV3D's CLIP preprocessing (sv3d.md §2.3, §4.3).

SV3D's cross-attention context is the projected class token of open_clip's ViT-H-14 visual
tower: pre-LN transformer, packed-qkv multi-head attention, exact GELU, LayerNorm eps 1e-5,
`ln_post` on the class token, then `@ proj`. The embedding is NOT L2-normalised.

Attribute names equal open_clip's, so the checkpoint slice
`conditioner.embedders.0.open_clip.model.visual.*` loads with `load_state_dict` as is.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sv3d_trt.models.config import CLIPConfig

# open_clip's OPENAI_DATASET_MEAN / OPENAI_DATASET_STD, applied by FrozenOpenCLIPImageEmbedder.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
LN_EPS = 1e-5


def _gaussian_kernel1d(size: int, sigma: float) -> torch.Tensor:
    """kornia's get_gaussian_kernel1d for an odd size: exp(-(x - size//2)^2 / 2 sigma^2), summing to 1."""
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def _antialias_blur(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The Gaussian pre-blur of kornia.geometry.resize(..., antialias=True) before a downscale.

    kornia: factor = in/out per axis, sigma = max((factor - 1) / 2, 0.001), kernel size
    int(max(4 sigma, 3)) rounded up to odd, reflect padding, separable filter (rows, then
    columns). 576 -> 224 gives sigma 0.786 and a 3-tap kernel. Axes that upscale are blurred
    too (with sigma 0.001) when the other axis downscales, as in kornia.
    """
    n, c, height, width = image.shape
    factors = (height / size[0], width / size[1])
    if max(factors) <= 1.0:
        return image
    sigmas = [max((f - 1.0) / 2.0, 0.001) for f in factors]
    taps = [int(max(4.0 * s, 3)) for s in sigmas]
    taps = [t if t % 2 else t + 1 for t in taps]
    taps = [1 if extent == 1 else t for t, extent in zip(taps, (height, width))]
    ky, kx = (_gaussian_kernel1d(t, s).to(image.device, image.dtype) for t, s in zip(taps, sigmas))
    x = F.pad(image, (kx.numel() // 2, kx.numel() // 2, ky.numel() // 2, ky.numel() // 2), mode="reflect")
    # Depthwise: one copy of the 1-D kernel per channel.
    x = F.conv2d(x, kx.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)  # (N, C, H + 2py, W)
    return F.conv2d(x, ky.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)  # (N, C, H, W)


def clip_preprocess(image: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> (N, 3, size, size) CLIP-normalised pixels.

    Matches FrozenOpenCLIPImageEmbedder.preprocess: kornia.geometry.resize to (size, size)
    with bicubic, align_corners=True, antialias=True (Gaussian blur when shrinking), no clamp;
    then (x + 1) / 2 and the OpenAI mean/std. Plain conv2d/interpolate so it exports to ONNX.
    """
    x = _antialias_blur(image, (size, size))
    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=True)  # (N, 3, size, size)
    x = (x + 1.0) / 2.0
    mean = torch.tensor(CLIP_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


class MultiheadAttention(nn.Module):
    """nn.MultiheadAttention's parameter layout (packed `in_proj_*`, `out_proj`) on SDPA.

    Written out instead of using nn.MultiheadAttention so it traces to plain MatMul/Softmax
    ONNX ops and runs in any weight dtype.
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.randn(3 * width, width) / math.sqrt(width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, L, D)
        n, length, width = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (N, L, 3D)
        # (N, L, 3, heads, D/heads) -> 3 x (N, heads, L, D/heads)
        q, k, v = qkv.view(n, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        h = F.scaled_dot_product_attention(q, k, v)  # (N, heads, L, D/heads)
        return self.out_proj(h.transpose(1, 2).reshape(n, length, width))


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, L, D)
        # ViT-H-14 uses exact (erf) GELU; quick_gelu is off in its model config.
        return self.c_proj(F.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block: x + attn(ln_1(x)), then x + mlp(ln_2(x)). No layer scale (ls_init_value None)."""

    def __init__(self, cfg: CLIPConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.width, eps=LN_EPS)
        self.attn = MultiheadAttention(cfg.width, cfg.heads)
        self.ln_2 = nn.LayerNorm(cfg.width, eps=LN_EPS)
        self.mlp = MLP(cfg.width, cfg.mlp_ratio * cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, L, D)
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, cfg: CLIPConfig):
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(cfg) for _ in range(cfg.layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, L, D)
        for block in self.resblocks:
            x = block(x)
        return x


class CLIPVisionTower(nn.Module):
    """open_clip VisionTransformer (pool 'tok', learnable positions, no attentional pool).

    Keys equal the official ones minus `conditioner.embedders.0.open_clip.model.visual.`.
    """

    def __init__(self, cfg: CLIPConfig):
        super().__init__()
        self.cfg = cfg
        scale = cfg.width**-0.5
        self.conv1 = nn.Conv2d(3, cfg.width, cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(cfg.width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(cfg.grid**2 + 1, cfg.width))
        self.ln_pre = nn.LayerNorm(cfg.width, eps=LN_EPS)
        self.transformer = Transformer(cfg)
        self.ln_post = nn.LayerNorm(cfg.width, eps=LN_EPS)
        self.proj = nn.Parameter(scale * torch.randn(cfg.width, cfg.output_dim))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:  # (N, 3, S, S) normalised -> (N, output_dim)
        x = self.conv1(pixels.to(self.conv1.weight.dtype))  # (N, D, S/p, S/p)
        x = x.flatten(2).transpose(1, 2)  # (N, grid*grid, D)
        cls = self.class_embedding.view(1, 1, -1).expand(x.shape[0], 1, -1)  # (N, 1, D)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding  # (N, 1 + grid*grid, D)
        x = self.transformer(self.ln_pre(x))
        pooled = self.ln_post(x[:, 0])  # (N, D): 'tok' pooling keeps the class token
        return pooled @ self.proj  # (N, output_dim)

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W) in [-1, 1] -> (N, output_dim)
        return self(clip_preprocess(image, self.cfg.image_size))

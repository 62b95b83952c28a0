"""The five exported graphs: one nn.Module wrapper each, over the IO contract of
contract/graphs.py (names, shapes, which graph feeds which; the only place it is written).

Where a fp16/bf16 graph keeps fp32, and why:
- denoise_step: the EDM scalings (c_in, c_out, c_skip, c_noise = 0.25 ln sigma) and the
  timestep sinusoid: sigma spans 0.002..700 and c_noise feeds cos/sin at up to 1e4 rad
  frequencies, where fp16 rounding (1e-3 relative) would move the embedding visibly. (The
  torch-eager backend casts c_noise to the UNet dtype before the sinusoid; the graph does not.)
- denoise_step: the skip term x * c_skip, the CFG combination D_u + s (D_c - D_u) and the Euler
  update x + (sigma_next - sigma)(x - D)/sigma: the latent is carried across 50 steps in fp32
  and (x - D)/sigma at sigma = 0.002 amplifies rounding by 500x.
- every GroupNorm (UNet ResBlocks, the transformer entry norms, the VAE): statistics in fp32
  (Cast -> InstanceNormalization -> Cast), as sgm's GroupNorm32 and PyTorch's fp32-accumulating
  kernels do; the variance of fp16 activations overflows fp16 above |x| ~ 256.
- LayerNorm exports as LayerNormalization with stash_type=1 (fp32 statistics) by default.
- clip: the antialias blur, bicubic resize and mean/std normalisation of the input image.
"""
from __future__ import annotations

import torch
from torch import nn

from ..contract.graphs import GRAPH_NAMES, GraphIO, graph_contracts
from ..models.clip import clip_preprocess
from ..models.config import SV3DConfig
from ..models.fold import FoldedVideoUNet, attn2_modules, attn2_outputs, copy_sharing_weights, fold_cross_attention
from ..models.unet_blocks import GroupNorm32
from ..sampler import guided_euler_step, precondition

# ---------------------------------------------------------------------------------------
# IO contracts (contract/graphs.py) with this config's attn2 widths


def attn2_widths(config: SV3DConfig) -> list[int]:
    """C_i of the 32 folded attn2 outputs, in fold order (from a meta-device UNet: no memory)."""
    from ..models.unet import VideoUNet

    with torch.device("meta"):
        return [a.to_out[0].out_features for a in attn2_modules(VideoUNet(config.unet)).values()]


def graph_io(config: SV3DConfig, decode_chunk: int) -> dict[str, GraphIO]:
    """The IO contract of every graph for `config` (contract/graphs.py `graph_contracts`)."""
    return graph_contracts(config, decode_chunk, attn2_widths(config))


def sample_inputs(io: GraphIO, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random inputs of a contract's shapes (non-trivial values, for tracing and tests)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in io.inputs:
        if t.sample_range is None:
            out.append(torch.randn(t.shape, generator=g))
        else:
            low, high = t.sample_range
            out.append(low + (high - low) * torch.rand(t.shape, generator=g))
    return tuple(out)


# ---------------------------------------------------------------------------------------
# Export-time transforms


def with_fp32_group_norms(module: nn.Module) -> nn.Module:
    """A weight-sharing copy of `module` whose nn.GroupNorms compute their statistics in fp32.

    Identical in fp32; in fp16/bf16 it exports Cast -> InstanceNormalization -> Cast instead of a
    half-precision InstanceNormalization (see the module docstring).
    """
    module = copy_sharing_weights(module)
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.GroupNorm:
                gn = GroupNorm32(child.num_groups, child.num_channels, eps=child.eps, affine=child.affine,
                                 device="meta")
                gn.weight, gn.bias = child.weight, child.bias
                setattr(parent, name, gn)
    return module


def _weight_dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


# ---------------------------------------------------------------------------------------
# Graphs


class CLIPGraph(nn.Module):
    """image (1,3,S,S) in [-1,1] -> clip_embedding (1,D); preprocessing (antialiased resize) included."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        self.clip = clip
        self.image_size = clip.cfg.image_size

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        pixels = clip_preprocess(image, self.image_size)  # (1, 3, s, s) fp32
        return self.clip(pixels).float()  # (1, D)


class VAEEncoderGraph(nn.Module):
    """image (1,3,S,S) in [-1,1] -> unscaled posterior mean (1,4,h,w)."""

    def __init__(self, vae_encoder: nn.Module):
        super().__init__()
        self.vae_encoder = with_fp32_group_norms(vae_encoder)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.vae_encoder(image).float()


class VAEDecoderGraph(nn.Module):
    """latent chunk (n,4,h,w), already divided by the VAE scale -> frames (n,3,S,S)."""

    def __init__(self, vae_decoder: nn.Module):
        super().__init__()
        self.vae_decoder = with_fp32_group_norms(vae_decoder)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.vae_decoder(latent).float()


class ContextGraph(nn.Module):
    """clip_embedding (1,D) -> the 32 folded attn2 outputs (2,C_i) [uncond, cond], fp32."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        # Only what the fold reads (to_v, to_out): these weights alone are exported and counted.
        self.attn2 = nn.ModuleList(nn.ModuleDict({"to_v": a.to_v, "to_out": a.to_out})
                                   for a in attn2_modules(unet).values())

    def forward(self, clip_embedding: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(v.float() for v in attn2_outputs(self.attn2, clip_embedding))


class DenoiseStepGraph(nn.Module):
    """One Euler step of the CFG-guided EDM sampler, as `TorchEagerBackend.step` computes it.

    Inputs (all fp32): x (T,4,h,w), sigma (1,), sigma_next (1,), concat_latent (1,4,h,w),
    vector (T,adm), cfg_scales (T,), then the 32 folded attn2 values (2,C_i). Returns x_next.
    """

    def __init__(self, unet: nn.Module | FoldedVideoUNet):
        super().__init__()
        folded = unet if isinstance(unet, FoldedVideoUNet) else fold_cross_attention(unet)
        self.unet = with_fp32_group_norms(folded)
        self.frames = folded.config.num_frames

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor, concat_latent: torch.Tensor,
                vector: torch.Tensor, cfg_scales: torch.Tensor, *attn2: torch.Tensor) -> torch.Tensor:
        T = self.frames
        dtype = _weight_dtype(self.unet)
        # 1. EDM preconditioning (VScalingWithEDMcNoise) in fp32; each factor is (1,).
        c_skip, c_out, c_in, c_noise = precondition(sigma)
        # 2. CFG batch of 2T: rows [0, T) uncond (concat latent zeroed, folded uncond values), [T, 2T) cond.
        xx = torch.cat([x, x])  # (2T, 4, h, w)
        latent = concat_latent.expand(T, -1, -1, -1)  # (T, 4, h, w)
        concat = torch.cat([torch.zeros_like(latent), latent])  # (2T, 4, h, w)
        unet_in = torch.cat([(xx * c_in).to(dtype), concat.to(dtype)], dim=1)  # (2T, 8, h, w)
        timesteps = c_noise.expand(2 * T)  # (2T,) fp32 into the sinusoid
        y = torch.cat([vector, vector])  # (2T, adm): both halves share the camera vector
        out = self.unet(unet_in, timesteps, y, [v.to(dtype) for v in attn2]).float()  # (2T, 4, h, w)
        # 3. Denoised prediction, per-frame triangular CFG and the Euler update, in fp32: the one
        # guided step of every backend (a select at sigma_next = 0, exported as Where).
        d = out * c_out + xx * c_skip
        return guided_euler_step(x, d[:T], d[T:], sigma, sigma_next, cfg_scales)  # (T, 4, h, w)


def build_graph(name: str, models) -> nn.Module:
    """The wrapper module of graph `name` over loaded SV3DModels (eval, no grad)."""
    if name == "clip":
        graph = CLIPGraph(models.clip)
    elif name == "vae_encoder":
        graph = VAEEncoderGraph(models.vae_encoder)
    elif name == "vae_decoder":
        graph = VAEDecoderGraph(models.vae_decoder)
    elif name == "context":
        graph = ContextGraph(models.unet)
    elif name == "denoise_step":
        graph = DenoiseStepGraph(models.unet)
    else:
        raise ValueError(f"unknown graph {name!r}; expected one of {GRAPH_NAMES}")
    return graph.eval()

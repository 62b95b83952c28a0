"""Model hyperparameters: one frozen dataclass per network, two named presets.

`full` is the released SV3D (sv3d.md §1.1, §2.3, §3). `tiny` keeps every key name,
depth, block structure, head layout and frame count of `full` and only shrinks widths
and the working resolution, so tests run the real architecture and the real key layout
in seconds on a CPU. Shapes anywhere in the package come from these objects, never from
literals.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

VARIANTS = ("sv3d_u", "sv3d_p")

# Width of the sinusoid embeddings that build the UNet's vector input y (sv3d.md §1.3).
COND_AUG_DIM = 256
CAMERA_DIM = 512


def adm_in_channels(variant: str) -> int:
    """Length of y: cond_aug (256) [+ polar (512) + azimuth (512) for sv3d_p]."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    return COND_AUG_DIM + (2 * CAMERA_DIM if variant == "sv3d_p" else 0)


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 8  # [noisy latent * c_in | concat latent]
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = (0, 1, 2)  # downsample factors 1, 2, 4 (+ middle block)
    num_head_channels: int = 64
    context_dim: int = 1024  # CLIP image embedding width
    num_frames: int = 21
    adm_in_channels: int = COND_AUG_DIM + 2 * CAMERA_DIM  # sv3d_p; sv3d_u uses 256
    norm_groups: int = 32

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.model_channels

    @property
    def variant(self) -> str:
        return "sv3d_p" if self.adm_in_channels == adm_in_channels("sv3d_p") else "sv3d_u"


@dataclass(frozen=True)
class VAEConfig:
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 4
    in_channels: int = 3
    out_channels: int = 3
    norm_groups: int = 32
    scale_factor: float = 0.18215  # diffusion latent = posterior mean * scale_factor

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


@dataclass(frozen=True)
class CLIPConfig:
    image_size: int = 224
    patch_size: int = 14
    width: int = 1280
    layers: int = 32
    heads: int = 16
    mlp_ratio: int = 4
    output_dim: int = 1024
    # Unused text-tower leftovers that the official file still carries (sv3d_p_keys.tsv).
    text_width: int = 1024
    text_context: int = 77
    vocab_size: int = 49408

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


@dataclass(frozen=True)
class SV3DConfig:
    name: str
    unet: UNetConfig
    vae: VAEConfig
    clip: CLIPConfig
    image_size: int = 576  # generated frames are image_size x image_size
    num_frames: int = 21
    fov_deg: float = 33.8  # vertical field of view of the SV3D cameras (mesh.md)
    camera_radius: float = 2.0

    @property
    def latent_size(self) -> int:
        return self.image_size // self.vae.downsample

    @property
    def variant(self) -> str:
        return self.unet.variant

    def with_variant(self, variant: str) -> "SV3DConfig":
        return replace(self, unet=replace(self.unet, adm_in_channels=adm_in_channels(variant)))


FULL = SV3DConfig(name="full", unet=UNetConfig(), vae=VAEConfig(), clip=CLIPConfig())

TINY = SV3DConfig(
    name="tiny",
    unet=UNetConfig(model_channels=32, num_head_channels=16, context_dim=32),
    vae=VAEConfig(ch=32),
    clip=CLIPConfig(image_size=28, width=64, heads=4, output_dim=32, text_width=32, text_context=8, vocab_size=16),
    image_size=64,
)

PRESETS = {"full": FULL, "tiny": TINY}


def get_config(name: str, variant: str = "sv3d_p") -> SV3DConfig:
    """Preset by name ('full' or 'tiny') for a variant ('sv3d_u' or 'sv3d_p')."""
    if name not in PRESETS:
        raise ValueError(f"unknown config {name!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[name].with_variant(variant)

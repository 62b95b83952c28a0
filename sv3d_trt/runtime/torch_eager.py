"""`torch-eager`: the reference recipe in plain PyTorch (sv3d.md §4-5).

CLIP and the VAE encoder run in fp32 (the reference disables autocast for the encoder;
CLIP's fp16 autocast is a GPU speed choice, not a numeric requirement), the UNet in the
requested dtype with the uncond/cond halves batched (42 frames at T = 21), the EDM
preconditioning, guidance and Euler update in fp32, and the decoder in fp32 chunks.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..models.checkpoint import DTYPES, SV3DModels, load_checkpoint
from ..sampler import guided_euler_step, precondition
from .backend import Backend, Conditioning


@dataclass
class StepState:
    """Both CFG halves stacked on the batch axis: rows [0, T) uncond, [T, 2T) cond."""

    concat: torch.Tensor  # (2T, 4, h, w)
    context: torch.Tensor  # (2T, 1, D)
    vector: torch.Tensor  # (2T, adm)
    cfg_scales: torch.Tensor  # (T, 1, 1, 1) float32


class TorchEagerBackend(Backend):
    name = "torch-eager"

    def __init__(self, models: SV3DModels, device: str = "cpu", dtype: str = "fp32", autocast: bool = False):
        super().__init__(models.config)
        self.models = models
        self.device = torch.device(device)
        self.dtype = DTYPES[dtype]
        self.autocast = autocast and self.dtype != torch.float32
        # Autocast (the reference recipe) keeps fp32 weights and computes matmuls in `dtype`.
        self.weight_dtype = torch.float32 if self.autocast else self.dtype

    @classmethod
    def from_checkpoint(cls, path, device: str = "cpu", dtype: str = "fp32", autocast: bool | None = None, **_):
        """UNet in `dtype`; CLIP and the VAE in fp32 as the reference. On CUDA a low-precision
        dtype means the reference recipe by default: fp32 weights under torch.autocast
        (sv3d.md §5); pass autocast=False for low-precision weights (half the memory)."""
        if autocast is None:
            autocast = torch.device(device).type == "cuda" and dtype != "fp32"
        unet = load_checkpoint(path, dtype="fp32" if autocast else dtype, device=device, components=("unet",))
        rest = load_checkpoint(path, dtype="fp32", device=device, components=("clip", "vae_encoder", "vae_decoder"))
        rest.unet = unet.unet
        return cls(rest, device=device, dtype=dtype, autocast=autocast)

    def describe(self) -> dict:
        return {"backend": self.name, "device": str(self.device), "dtype": str(self.dtype).replace("torch.", ""),
                "autocast": self.autocast, "torch": torch.__version__}

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # sync

    def close(self) -> None:
        """Drop the weights; on CUDA return the cached blocks to the driver."""
        self.models = None
        if self.device.type == "cuda" and torch.cuda.is_initialized():
            torch.cuda.empty_cache()

    def to_native(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)

    def to_numpy(self, x: torch.Tensor) -> np.ndarray:
        return x.detach().float().cpu().numpy()

    @torch.inference_mode()
    def encode(self, image: np.ndarray, noised_image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        clip = self.models.clip.encode_image(self.to_native(image))  # (1, D): CLIP sees the clean image
        latent = self.models.vae_encoder(self.to_native(noised_image))  # (1, 4, h, w)
        return self.to_numpy(clip), self.to_numpy(latent)

    def prepare(self, cond: Conditioning, vector: np.ndarray, cfg_scales: np.ndarray) -> StepState:
        T = self.config.num_frames
        clip = self.to_native(cond.clip_embedding)  # (1, D)
        latent = self.to_native(cond.concat_latent)  # (1, 4, h, w)
        # 1. uncond zeroes exactly CLIP and the concat latent; the vector is shared (sv3d.md §4.5)
        concat = torch.cat([torch.zeros_like(latent).expand(T, -1, -1, -1), latent.expand(T, -1, -1, -1)])
        context = torch.cat([torch.zeros_like(clip).expand(T, -1), clip.expand(T, -1)])[:, None]
        vec = self.to_native(vector)
        return StepState(
            concat=concat.to(self.weight_dtype),
            context=context.to(self.weight_dtype),
            vector=torch.cat([vec, vec]).to(self.weight_dtype),
            cfg_scales=self.to_native(cfg_scales).view(T, 1, 1, 1),
        )

    def denoised(self, state: StepState, x: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
        """D(x; sigma) of the uncond and cond halves in fp32 (sv3d.md §5: VScalingWithEDMcNoise)."""
        c_skip, c_out, c_in, c_noise = precondition(torch.tensor(sigma, dtype=torch.float32, device=self.device))
        xx = torch.cat([x, x])  # (2T, 4, h, w)
        unet_in = torch.cat([(xx * c_in).to(self.weight_dtype), state.concat], dim=1)  # (2T, 8, h, w)
        t = c_noise.expand(xx.shape[0]).to(self.weight_dtype)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.autocast):
            out = self.models.unet(unet_in, t, state.context, state.vector).float()
        d = out * c_out + xx * c_skip
        return d.chunk(2)

    @torch.inference_mode()
    def step(self, state: StepState, x: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
        return guided_euler_step(x, *self.denoised(state, x, sigma), sigma, sigma_next, state.cfg_scales)

    @torch.inference_mode()
    def decode(self, latent: np.ndarray, chunk: int) -> np.ndarray:
        z = self.to_native(latent)
        frames = [self.models.vae_decoder(z[i : i + chunk]) for i in range(0, z.shape[0], chunk)]
        return self.to_numpy(torch.cat(frames))

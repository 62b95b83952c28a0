"""`torch-fast`: the reference models with the `FastOptions` transforms applied from outside.

Same request flow and math as `torch-eager` (encode is inherited unchanged); the denoise step
runs the runtime UNet (cross-attention folded per image, invariants hoisted, fused kernels,
packed attention, channels-last) inside one `CFGEulerStep`, replayed as a CUDA graph on CUDA
with the sigma schedule on the device and no host sync inside the loop. NaN/inf are flagged
per step on the device and reported, with the step, after the loop. The VAE decodes in the
UNet's dtype on CUDA, in chunks that fit the free memory.

On CPU every transform runs with the kernels' plain-torch references, so CI exercises them all.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from ..fast import CFGEulerStep, FastOptions, FastState, RuntimeUNet
from ..fast.compile import CompiledModule, cache_file
from ..fast.decode import decode_latents, fitting_chunk
from ..fast.graph import GraphedStep
from ..models.checkpoint import SV3DModels, load_checkpoint
from .backend import Conditioning, non_finite_error
from .torch_eager import TorchEagerBackend


class TorchFastBackend(TorchEagerBackend):
    name = "torch-fast"

    def __init__(self, models: SV3DModels, device: str = "cpu", dtype: str = "fp32",
                 options: FastOptions | None = None):
        super().__init__(models, device=device, dtype=dtype)
        self.options = (options or FastOptions()).for_device(self.device.type)
        self.unet = RuntimeUNet(models.unet, self.options)
        models.unet = None  # the runtime UNet holds what it needs; the reference's other weights can go
        compiled = None
        if self.options.compile is not None:
            cache = None
            if self.options.compile_cache is not None:
                cache = cache_file(self.options.compile_cache, f"{self.config.name}-{self.variant}-fast",
                                   self.device.type, self.dtype, self.options.compile)
            compiled = CompiledModule(self.unet, self.options.compile, cache)
        self.stepper = CFGEulerStep.over(self.unet, compiled)
        self._graph: GraphedStep | None = None

    @classmethod
    def from_checkpoint(cls, path, device: str = "cpu", dtype: str = "fp32", options: FastOptions | None = None,
                        **overrides):
        """overrides: FastOptions fields (fold=False, compile="default", ...) on top of `options`."""
        options = replace(options or FastOptions(), **overrides)
        device_type = torch.device(device).type
        decode_dtype = options.decode_dtype or (dtype if device_type == "cuda" else "fp32")
        unet = load_checkpoint(path, dtype=dtype, device=device, components=("unet",))
        models = load_checkpoint(path, dtype="fp32", device=device, components=("clip", "vae_encoder"))
        models.vae_decoder = load_checkpoint(path, dtype=decode_dtype, device=device,
                                             components=("vae_decoder",)).vae_decoder
        models.unet = unet.unet
        return cls(models, device=device, dtype=dtype, options=options)

    def describe(self) -> dict:
        return {**super().describe(), "options": self.options.describe()}

    def close(self) -> None:
        """Drop the captured graph, the runtime UNet and the weights (then TorchEagerBackend.close)."""
        self._graph = self.stepper = self.unet = None
        super().close()

    @torch.inference_mode()
    def prepare(self, cond: Conditioning, vector: np.ndarray, cfg_scales: np.ndarray) -> FastState:
        T = self.config.num_frames
        latent = self.to_native(cond.concat_latent).to(self.dtype)  # (1, 4, h, w)
        concat = torch.cat([torch.zeros_like(latent).expand(T, -1, -1, -1), latent.expand(T, -1, -1, -1)])
        conditioning = self.unet.conditioning(self.to_native(cond.clip_embedding), self.to_native(vector))
        return FastState(concat=concat, conditioning=conditioning,
                         cfg_scales=self.to_native(cfg_scales).view(T, 1, 1, 1))

    def _run(self, state: FastState, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        if not self.options.cuda_graph:
            return self.stepper(x, sigma, sigma_next, *state.tensors())
        if self._graph is None:
            self._graph = GraphedStep(self.stepper, state, x)
        return self._graph.run(state, x, sigma, sigma_next)

    @torch.inference_mode()
    def step(self, state: FastState, x: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
        sigmas = torch.tensor([sigma, sigma_next], dtype=torch.float32).to(self.device)
        return self._run(state, x, sigmas[0], sigmas[1]).clone()  # a graph's output buffer is reused

    @torch.inference_mode()
    def denoise(self, state: FastState, x0: np.ndarray, sigmas: np.ndarray, on_step=None) -> np.ndarray:
        """The sampler loop with the schedule on the device: no host sync until the result."""
        x = self.to_native(x0)
        s = torch.from_numpy(np.asarray(sigmas, dtype=np.float32)).to(self.device)  # (steps + 1,)
        finite = torch.ones(len(sigmas) - 1, dtype=torch.bool, device=self.device)
        for i in range(len(sigmas) - 1):
            x = self._run(state, x, s[i], s[i + 1])
            finite[i] = torch.isfinite(x).all()  # a device write: no sync
            if on_step is not None:
                on_step(i)
        out = self.to_numpy(x)  # the one sync
        bad = (~finite).nonzero()
        if len(bad):
            raise non_finite_error(int(bad[0]), sigmas)
        return out

    def is_finite(self, x: torch.Tensor) -> bool:
        return bool(torch.isfinite(x).all())

    @torch.inference_mode()
    def decode(self, latent: np.ndarray, chunk: int) -> np.ndarray:
        decoder_dtype = next(self.models.vae_decoder.parameters()).dtype
        chunk = fitting_chunk(self.config, decoder_dtype, self.device, chunk)
        return self.to_numpy(decode_latents(self.models.vae_decoder, self.to_native(latent), chunk))

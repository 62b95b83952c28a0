"""The one small interface every backend implements, and the registry of backends.

A backend turns arrays into arrays for the three stages of a request: encode the input
image (CLIP embedding + VAE concat latent), run one denoise step of the batched-CFG
sampler, decode latents to frames. The denoise loop is written once, here, against that
`step`; backends that capture the whole loop (CUDA graphs) override `denoise`. Everything
crossing this boundary is numpy, so this module and the pipeline never import torch.

Lifecycle, the same for every backend (a server and the benchmark drive only this):
`device` says where it computes, `warmup()` pays the lazy first-call work (kernel JIT, CUDA
graph capture, autotuning) before the first request, `synchronize()` waits for queued device
work, `close()` frees engines, graphs and device memory (idempotent; also on `with` exit).
"""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..contract.backends import canonical_backend
from ..errors import BackendUnavailableError, NumericsError


@dataclass
class Conditioning:
    """Per-image conditioning; computed once, reusable for any number of orbits."""

    clip_embedding: np.ndarray  # (1, context_dim) float32
    concat_latent: np.ndarray  # (1, 4, h, w) float32, unscaled posterior mean
    input_rgb: np.ndarray  # (H, W, 3) uint8, the preprocessed input view


class Backend(ABC):
    """Protocol of one execution engine. Public methods are stage-level and numpy in/out."""

    name: str = ""
    # Draw the sampler noise with torch when it is installed (the reference's numbers for a
    # seed, runtime/noise.py); backends that promise a torch-free process set False.
    torch_noise: bool = True
    device: Any = "cpu"  # where it computes: "cpu", "cuda:0" (a torch.device on torch backends)

    def __init__(self, config):
        self.config = config  # SV3DConfig

    @property
    def variant(self) -> str:
        return self.config.variant

    @property
    def noise_device(self) -> str:
        """The device whose torch generator draws this backend's noise (runtime/noise.py)."""
        return str(self.device)

    # -- lifecycle ------------------------------------------------------------------------

    def synchronize(self) -> None:
        """Wait until every call made so far has finished on the device. Backends whose calls
        return only when their work is done (numpy out, CPU torch, ONNX Runtime) need nothing."""

    def warmup(self, steps: int = 50, decode_chunk: int = 14) -> None:
        """Run every stage once on random inputs of the config's shapes, so the first request
        does not pay lazy work (kernel JIT, CUDA graph capture for `steps`, autotuning, arenas)."""
        from ..sampler import edm_sigmas, initial_noise_scale, triangle_cfg_scales

        cfg, rng = self.config, np.random.default_rng(0)
        T, S, h = cfg.num_frames, cfg.image_size, cfg.latent_size
        image = rng.uniform(-1, 1, (1, 3, S, S)).astype(np.float32)
        clip, latent = self.encode(image, image)
        cond = Conditioning(clip_embedding=clip, concat_latent=latent, input_rgb=np.zeros((S, S, 3), np.uint8))
        vector = rng.standard_normal((T, cfg.unet.adm_in_channels)).astype(np.float32)
        state = self.prepare(cond, vector, triangle_cfg_scales(T).astype(np.float32))
        x0 = rng.standard_normal((T, cfg.vae.z_channels, h, h)).astype(np.float32)
        sigmas = edm_sigmas(steps)
        x0 *= np.float32(initial_noise_scale(float(sigmas[0])))
        self.decode(self.denoise(state, x0, sigmas) / np.float32(cfg.vae.scale_factor), decode_chunk)
        self.synchronize()

    def close(self) -> None:
        """Free what the backend holds on the device (engines, graphs, buffers, weights); the
        backend is unusable afterwards. Idempotent."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @abstractmethod
    def encode(self, image: np.ndarray, noised_image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """image (1,3,H,W) in [-1,1] for CLIP, noised_image = image + cond_aug * noise for the VAE
        encoder (the pipeline adds it) -> (clip_embedding (1,D), concat_latent (1,4,h,w))."""

    @abstractmethod
    def prepare(self, cond: Conditioning, vector: np.ndarray, cfg_scales: np.ndarray) -> Any:
        """Per-generation state for `step` (batched uc/c conditioning, folded context, ...).
        vector: (T, adm) camera/cond_aug vector; cfg_scales: (T,) triangular guidance."""

    @abstractmethod
    def step(self, state: Any, x: Any, sigma: float, sigma_next: float) -> Any:
        """One Euler step of the CFG-guided EDM sampler: x_t (T,4,h,w) -> x_{t+1}."""

    @abstractmethod
    def to_native(self, x: np.ndarray) -> Any:
        """Move a latent into the backend's own array type (device tensor, numpy)."""

    @abstractmethod
    def to_numpy(self, x: Any) -> np.ndarray:
        """Bring a latent back as float32 numpy."""

    @abstractmethod
    def decode(self, latent: np.ndarray, chunk: int) -> np.ndarray:
        """latent (T,4,h,w) (already divided by the VAE scale) -> frames (T,3,H,W) raw decoder output."""

    def denoise(
        self,
        state: Any,
        x0: np.ndarray,
        sigmas: np.ndarray,
        on_step: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """The sampler loop from x0 (the pipeline scaled the noise by sqrt(1 + sigma_0^2)): one
        `step` per sigma pair. Returns the final latent (T,4,h,w) float32."""
        x = self.to_native(x0)
        for i in range(len(sigmas) - 1):
            x = self.step(state, x, float(sigmas[i]), float(sigmas[i + 1]))
            if not self.is_finite(x):  # name the step now: fp16 overflow is local to one sigma
                raise non_finite_error(i, sigmas)
            if on_step is not None:
                on_step(i)
        return self.to_numpy(x)

    def is_finite(self, x: Any) -> bool:
        """Whether a latent holds no NaN/inf; backends may check on the device instead."""
        return bool(np.isfinite(self.to_numpy(x)).all())

    def describe(self) -> dict:
        """Settings for run.json (device, dtype, versions)."""
        return {"backend": self.name}


def non_finite_error(step: int, sigmas: np.ndarray) -> NumericsError:
    """The error for a latent that turned NaN/inf in denoise step `step` (0-based)."""
    return NumericsError(
        f"the latent became non-finite in denoise step {step + 1}/{len(sigmas) - 1} "
        f"(sigma {float(sigmas[step]):.4g} -> {float(sigmas[step + 1]):.4g}); in fp16/int8/fp8 "
        "this is overflow: use fp32 (--dtype fp32, or an fp32 export/engines); in fp32, NaN/inf reached the "
        "model from its weights or inputs"
    )


def chunk_ranges(total: int, chunk: int) -> list[tuple[int, int]]:
    """[start, stop) of consecutive chunks of at most `chunk` items covering `total`."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    return [(i, min(i + chunk, total)) for i in range(0, total, chunk)]


def pad_chunk(x: np.ndarray, size: int) -> np.ndarray:
    """Pad a short last chunk to the fixed batch `size` of a fixed-shape graph by repeating its
    last item (a real latent, so the padded rows compute nothing unusual); callers drop them."""
    if len(x) == size:
        return x
    return np.concatenate([x, np.repeat(x[-1:], size - len(x), axis=0)])


# CLI name -> "module:Class", imported on first use so only the chosen backend's
# dependencies load (the TensorRT path never imports torch).
REGISTRY = {
    "torch-eager": "sv3d_trt.runtime.torch_eager:TorchEagerBackend",
    "torch-fast": "sv3d_trt.runtime.torch_fast:TorchFastBackend",
    "torch-compile": "sv3d_trt.runtime.torch_compile:TorchCompileBackend",
    "ort": "sv3d_trt.runtime.ort:OrtBackend",
    "tensorrt": "sv3d_trt.runtime.trt:TensorRTBackend",
    "tensorrt-rtx": "sv3d_trt.runtime.trt:TensorRTRTXBackend",
}


def backend_class(name: str) -> type[Backend]:
    name = canonical_backend(name)
    if name not in REGISTRY:
        raise BackendUnavailableError(
            f"backend {name!r} is not available in this build; available: {', '.join(REGISTRY)}"
        )
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)

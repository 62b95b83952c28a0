"""`Pipeline`: image -> 21-view orbit, the same request flow over every backend.

    preprocess -> encode once (CLIP + VAE) -> [per orbit] vector + noise -> denoise loop
    -> decode in chunks -> frames (+ the input view as frame 20) -> cameras

The pipeline never asks which backend it holds (diffusers' separation of models and
pipelines); it owns the RNG draw order, so one seed gives the same noise on every backend.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..cameras import COND_AUG, Orbit, camera_vector, cameras_json, resolve_orbit
from ..preprocess import load_image, prepare_image
from ..sampler import edm_sigmas, initial_noise_scale, triangle_cfg_scales
from .backend import Backend, Conditioning, backend_class
from .noise import draw_noise


@dataclass
class Result:
    """One generated orbit."""

    frames: np.ndarray  # (T, H, W, 3) uint8
    latent: np.ndarray  # (T, 4, h, w) float32, final sampler output (scaled latent space)
    orbit: Orbit | None
    cameras: dict
    input_rgb: np.ndarray  # (H, W, 3) uint8
    seed: int
    timings: dict = field(default_factory=dict)  # stage -> seconds
    noise_source: str = ""  # which generator drew the noise (runtime/noise.py), for run.json

    def save(self, out_dir: str | Path, fps: int = 10) -> dict:
        """Write frame_000..020.png, orbit.mp4, orbit.gif, cameras.json, input.png."""
        from ..outputs import save_outputs

        return save_outputs(out_dir, self.frames, self.cameras, self.input_rgb, fps=fps)


class Pipeline:
    """The public API. `Pipeline.from_checkpoint(ckpt).generate("cat.png").save("out/")`."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self.config = backend.config

    def warmup(self, steps: int = 50, decode_chunk: int = 14) -> None:
        """Pay the backend's first-call costs now (Backend.warmup), e.g. before serving."""
        self.backend.warmup(steps=steps, decode_chunk=decode_chunk)

    def close(self) -> None:
        """Free the backend's engines and device memory (Backend.close)."""
        self.backend.close()

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @classmethod
    def from_checkpoint(cls, checkpoint, backend: str = "torch-eager", device: str = "cpu", dtype: str = "fp32",
                        **options) -> "Pipeline":
        """Build a pipeline over a PyTorch backend (torch-eager, torch-compile, torch-fast)."""
        from ..devices import check_torch_device

        device = check_torch_device(device)  # before torch parses an unknown device string its own way
        return cls(backend_class(backend).from_checkpoint(checkpoint, device=device, dtype=dtype, **options))

    @classmethod
    def from_artifacts(cls, path, backend: str | None = None, device: str | None = None, **options) -> "Pipeline":
        """Build a pipeline over whatever `path` holds: engines (manifest.json) -> tensorrt /
        tensorrt-rtx, an ONNX export (export.json) -> ort, a checkpoint -> torch-eager.
        `backend` forces one; see runtime/artifacts.py for the rules and error messages."""
        from .artifacts import open_backend

        return cls(open_backend(path, backend=backend, device=device, **options))

    @property
    def variant(self) -> str:
        return self.config.variant

    def _noise(self, seed: int):
        return draw_noise(seed, device=self.backend.noise_device, prefer_torch=self.backend.torch_noise)

    def condition(self, image, mask=None, rembg: bool = False, seed: int = 23) -> tuple[Conditioning, Any]:
        """Preprocess and encode an image once. Returns the conditioning and the RNG that
        continues the reference draw order (image noise first, then the initial latent)."""
        t0 = time.perf_counter()
        prepared = prepare_image(load_image(image, mask=mask, rembg=rembg), size=self.config.image_size)
        rng = self._noise(seed)
        cond_noise = rng.randn(prepared.tensor.shape)
        noised = prepared.tensor + np.float32(COND_AUG) * cond_noise  # cond_aug: the VAE sees it, CLIP not
        clip, latent = self.backend.encode(prepared.tensor, noised)
        cond = Conditioning(clip_embedding=clip, concat_latent=latent, input_rgb=prepared.rgb_uint8)
        self._encode_seconds = time.perf_counter() - t0
        return cond, rng

    def generate(
        self,
        image=None,
        *,
        conditioning: Conditioning | None = None,
        rng=None,
        orbit: str | None = None,
        elevation: float | None = None,
        seed: int = 23,
        steps: int = 50,
        decode_chunk: int = 14,
        replace_last_frame: bool = True,
        mask=None,
        rembg: bool = False,
        on_step: Callable[[int], None] | None = None,
    ) -> Result:
        """Generate one orbit. Pass `image`, or a `conditioning` from `condition()` to reuse
        the encoded image for another camera path (with a fresh `seed` for its noise)."""
        timings = {}
        cfg = self.config
        T = cfg.num_frames
        # Validate cameras before any expensive work.
        resolved = resolve_orbit(self.variant, orbit, elevation_deg=elevation, num_frames=T, seed=seed)
        if conditioning is None:
            if image is None:
                raise ValueError("generate() needs an image or a conditioning")
            conditioning, rng = self.condition(image, mask=mask, rembg=rembg, seed=seed)
            timings["encode"] = self._encode_seconds
        elif rng is None:
            rng = self._noise(seed)
            rng.randn((1, 3, cfg.image_size, cfg.image_size))  # keep the reference draw order

        vector = camera_vector(self.variant, resolved, num_frames=T, cond_aug=COND_AUG)
        scales = triangle_cfg_scales(T).astype(np.float32)
        sigmas = edm_sigmas(steps)
        h = cfg.latent_size
        x0 = rng.randn((T, cfg.vae.z_channels, h, h)) * np.float32(initial_noise_scale(float(sigmas[0])))

        t0 = time.perf_counter()
        state = self.backend.prepare(conditioning, vector, scales)
        latent = self.backend.denoise(state, x0, sigmas, on_step=on_step)
        timings["denoise"] = time.perf_counter() - t0
        if not np.isfinite(latent).all():
            from ..errors import NumericsError

            raise NumericsError("the denoised latent contains NaN/inf; try --dtype fp32 or bf16")

        t0 = time.perf_counter()
        frames = self.backend.decode(latent / np.float32(cfg.vae.scale_factor), decode_chunk)
        timings["decode"] = time.perf_counter() - t0
        frames = (np.clip((frames + 1.0) / 2.0, 0.0, 1.0) * 255).astype(np.uint8)  # truncation, as the reference
        frames = frames.transpose(0, 2, 3, 1)  # (T, H, W, 3)
        if replace_last_frame:  # the reference shows the exact input view as frame 20
            frames[-1] = conditioning.input_rgb
        cameras = cameras_json(resolved, image_size=cfg.image_size, fov_deg=cfg.fov_deg, radius=cfg.camera_radius,
                               num_frames=T)
        return Result(frames=frames, latent=latent, orbit=resolved, cameras=cameras,
                      input_rgb=conditioning.input_rgb, seed=seed, timings=timings,
                      noise_source=getattr(rng, "source", ""))

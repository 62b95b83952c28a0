"""The calibration set of int8/fp8 builds: real denoise_step feeds, recorded during seeded generations.

`sv3d-trt export` runs a few complete generations (the bundled example images by default,
a folder of the user's images with `--calib-images`) through the torch-eager reference in fp32
and keeps, for the recorded steps, exactly what the denoise_step graph is fed at that point:
the step's inputs and the folded cross-attention values the context graph computes
(models/fold.py `attn2_outputs`; the exported fp32 graphs reproduce the reference trajectory
to 1e-6). The file format is contract/calibration.py's, which export/quantize.py reads: one
array per step-graph input, stacked along a leading sample axis, plus `_generation` and `_step`.
It lives in the runtime, not in export/, because it is a run of the pipeline; the exporter
receives it as a callable (`export_checkpoint(calibrate=...)`) and never imports the runtime.

Size: every sample repeats the per-generation inputs, so a full-size sample is ~2 MB (mostly
x_t, 21x4x72x72 fp32). The set is capped at `max_bytes` (256 MiB by default): when all steps of
all generations do not fit (full config: 4 generations x 50 steps = 390 MB), each generation
records the same evenly spaced subset of steps, always including the first and the last, so
the whole sigma range 700 -> 0.002 stays covered. The tiny config records every step.

sv3d_p generations alternate the static orbit and a seeded dynamic orbit, so the camera
vector varies across the set; sv3d_u has no camera input.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from ..contract.calibration import CALIBRATION_PATH, save_calibration
from ..contract.graphs import STEP_INPUTS, attn2_input_names, graph_contracts
from ..errors import ImageError
from ..models.checkpoint import load_checkpoint
from ..models.fold import attn2_modules, attn2_outputs
from ..preprocess import EXAMPLES, example_image_path
from .pipeline import Pipeline
from .torch_eager import TorchEagerBackend

DEFAULT_SEEDS = 2
DEFAULT_STEPS = 50
DEFAULT_MAX_BYTES = 256 * 2**20
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def calibration_images(directory: str | os.PathLike | None = None) -> list[Path]:
    """The images to calibrate on: every image file of `directory`, or the bundled examples."""
    if directory is None:
        return [example_image_path(name) for name in sorted(EXAMPLES)]
    directory = Path(directory)
    if not directory.is_dir():
        raise ImageError(f"calibration image folder {directory} does not exist")
    images = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise ImageError(f"{directory} holds no image ({', '.join(IMAGE_SUFFIXES)})")
    return images


def recorded_steps(steps: int, generations: int, sample_bytes: int, max_bytes: int) -> list[int]:
    """Step indices each generation records: all of them, or an even subset within max_bytes."""
    per_generation = max(2, max_bytes // max(1, sample_bytes * generations))
    if per_generation >= steps:
        return list(range(steps))
    return sorted({int(round(i)) for i in np.linspace(0, steps - 1, per_generation)})


class RecordingBackend(TorchEagerBackend):
    """torch-eager in fp32 that keeps the denoise_step graph's feed at the chosen steps."""

    def __init__(self, models, device: str, steps_to_record: Iterable[int]):
        super().__init__(models, device=device, dtype="fp32")
        self.attn2 = list(attn2_modules(models.unet).values())
        self.steps_to_record = set(steps_to_record)
        self.samples: list[dict[str, np.ndarray]] = []
        self.sample_steps: list[int] = []
        self._feed: dict[str, np.ndarray] = {}
        self._step = 0

    @torch.inference_mode()
    def prepare(self, cond, vector: np.ndarray, cfg_scales: np.ndarray):
        attn2 = attn2_outputs(self.attn2, self.to_native(cond.clip_embedding))  # the context graph's outputs
        self._feed = {
            "concat_latent": np.asarray(cond.concat_latent, np.float32),  # (1, 4, h, w)
            "vector": np.asarray(vector, np.float32),  # (T, adm)
            "cfg_scales": np.asarray(cfg_scales, np.float32),  # (T,)
            **{n: self.to_numpy(a) for n, a in zip(attn2_input_names(len(attn2)), attn2)},  # (2, C_i)
        }
        self._step = 0
        return super().prepare(cond, vector, cfg_scales)

    def step(self, state, x: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
        if self._step in self.steps_to_record:
            feed = {"x": self.to_numpy(x), "sigma": np.array([sigma], np.float32),
                    "sigma_next": np.array([sigma_next], np.float32), **self._feed}
            names = [*STEP_INPUTS, *attn2_input_names(len(self.attn2))]  # the graph's input order
            self.samples.append({n: feed[n] for n in names})
            self.sample_steps.append(self._step)
        self._step += 1
        return super().step(state, x, sigma, sigma_next)


def record_calibration(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    images: Iterable[str | os.PathLike] | None = None,
    seeds: Iterable[int] = range(DEFAULT_SEEDS),
    steps: int = DEFAULT_STEPS,
    device: str = "cpu",
    max_bytes: int = DEFAULT_MAX_BYTES,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """Run one generation per (image, seed), record the step feeds into
    `out_dir/calibration/denoise_step.npz`. Returns the export.json entry.
    progress(stage, done, total): one stage per generation, counted in sampler steps."""
    t0 = time.perf_counter()
    images = [Path(p) for p in (calibration_images() if images is None else images)]
    seeds = list(seeds)
    if progress is not None:
        progress("calibrate: load the fp32 model", 0, 1)
    models = load_checkpoint(checkpoint, dtype="fp32", device=device)
    widths = [a.to_out[0].out_features for a in attn2_modules(models.unet).values()]
    io = graph_contracts(models.config, 1, widths)["denoise_step"]
    sample_bytes = sum(t.nbytes for t in io.inputs)
    generations = [(image, seed) for image in images for seed in seeds]
    chosen = recorded_steps(steps, len(generations), sample_bytes, max_bytes)
    backend = RecordingBackend(models, device, chosen)
    pipe = Pipeline(backend)
    generation_of, orbits = [], []
    for g, (image, seed) in enumerate(generations):
        orbit = "dynamic" if models.config.variant == "sv3d_p" and g % 2 else None
        before = len(backend.samples)
        stage = f"calibrate {g + 1}/{len(generations)}: {image.name}, seed {seed}"
        on_step = (lambda i, stage=stage: progress(stage, i + 1, steps)) if progress is not None else None
        pipe.generate(image, seed=seed, steps=steps, orbit=orbit, on_step=on_step)
        generation_of += [g] * (len(backend.samples) - before)
        orbits.append(orbit or ("static" if models.config.variant == "sv3d_p" else None))
    path = Path(out_dir) / CALIBRATION_PATH
    save_calibration(path, backend.samples, generation_of, backend.sample_steps)
    return {
        "file": CALIBRATION_PATH.as_posix(),
        "generations": [{"image": image.name, "seed": seed, "orbit": orbit}
                        for (image, seed), orbit in zip(generations, orbits)],
        "steps": steps,
        "recorded_steps": chosen,
        "samples": len(backend.samples),
        "bytes": path.stat().st_size,
        "seconds": round(time.perf_counter() - t0, 2),
    }

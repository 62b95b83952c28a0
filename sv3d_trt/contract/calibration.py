"""The calibration set's file: what the recorder (runtime/calibration.py, during reference
generations) writes and the int8/fp8 quantizer (export/quantize.py) reads.

`<export dir>/calibration/denoise_step.npz`:
    one array per input of denoise_step.onnx, keyed by the input name, shape (N, *input shape),
    any float dtype for float inputs (cast to the graph's dtype when fed): sample i is one real
    feed of the step graph recorded during a seeded generation;
    `_generation` (N,) int64: which generation sample i came from;
    `_step` (N,) int64: its sampler step index (0 = first step, pure noise).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..fileio import atomic_path

CALIBRATION_PATH = Path("calibration") / "denoise_step.npz"
GENERATION_KEY = "_generation"
STEP_KEY = "_step"


def save_calibration(
    path: str | os.PathLike,
    samples: Sequence[Mapping[str, np.ndarray]],
    generation: Sequence[int],
    step: Sequence[int],
) -> None:
    """Write recorded step-graph feeds in the format described in the module docstring."""
    if not samples or not (len(samples) == len(generation) == len(step)):
        raise ValueError("need one generation index and one step index per sample, and at least one sample")
    arrays = {name: np.stack([np.asarray(s[name]) for s in samples]) for name in samples[0]}
    arrays[GENERATION_KEY] = np.asarray(generation, dtype=np.int64)
    arrays[STEP_KEY] = np.asarray(step, dtype=np.int64)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)

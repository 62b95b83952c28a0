"""The sampler's random numbers, in the reference's draw order.

The reference seeds torch once and draws, on the generating device, first the cond_aug
noise (like the image) and then the initial latent (sv3d.md §4.2). With torch installed
we draw from torch's generator on the same device, so a seed reproduces the reference's
noise exactly (CPU and CUDA generators differ from each other, as in the reference). A
torch-free process (engines only) falls back to numpy's Philox: same order, different
numbers; `source` names which one was used and goes into run.json.
"""
from __future__ import annotations

import importlib.util

import numpy as np


class NoiseSource:
    def __init__(self, seed: int, device: str = "cpu", prefer_torch: bool = True):
        self.seed = seed
        self._torch = None
        if prefer_torch and importlib.util.find_spec("torch") is not None:
            import torch

            self._torch = torch
            self.device = torch.device(device)
            self._gen = torch.Generator(device=self.device).manual_seed(seed)
            self.source = f"torch-{self.device.type}"
        else:
            self._gen = np.random.Generator(np.random.Philox(seed))
            self.source = "numpy-philox"

    def randn(self, shape) -> np.ndarray:
        """Standard normal float32 array of `shape`, continuing this seed's stream."""
        if self._torch is not None:
            t = self._torch.randn(tuple(shape), generator=self._gen, device=self.device)
            return t.cpu().numpy()
        return self._gen.standard_normal(tuple(shape), dtype=np.float32)


def draw_noise(seed: int, device: str = "cpu", prefer_torch: bool = True) -> NoiseSource:
    return NoiseSource(seed, device=str(device), prefer_torch=prefer_torch)

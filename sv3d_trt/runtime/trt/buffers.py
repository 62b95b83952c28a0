"""The fixed device buffers of the plan (plan.py), allocated once per process, and pinned host
staging for the ones the host writes or reads; the rest never leave the GPU."""
from __future__ import annotations

import numpy as np

from .. import cuda
from .engines import Engines
from .plan import BufferPlan

# Buffers with pinned host staging: the ones the host writes or reads.
STAGED = ("clip.image", "vae_encoder.image", "clip_embedding", "vae_encoder.latent", "denoise_step.concat_latent",
          "denoise_step.vector", "denoise_step.cfg_scales", "vae_decoder.latent")


class Buffers:
    def __init__(self, plan: BufferPlan, engines: Engines):
        self.device = {k: cuda.DeviceBuffer(b.total_bytes, k) for k, b in plan.buffers.items()}
        self.staging = {k: cuda.PinnedArray((b.slots, *b.shape), b.dtype)
                        for k, b in plan.buffers.items() if k in STAGED}
        for graph, names in plan.bindings.items():  # fixed tensors keep their address for good
            for name, key in names.items():
                engines.set_address(graph, name, self.device[key].ptr)

    def upload(self, key: str, array: np.ndarray, stream: cuda.Stream) -> None:
        staged = self.staging[key].array  # (slots, *shape)
        staged[0] = array
        cuda.copy_to_device(self.device[key].ptr, self.staging[key], stream, nbytes=staged[0].nbytes)

    def download(self, key: str, stream: cuda.Stream) -> None:
        """Queue the copy of buffer `key` into its staging; read `host(key)` after a sync."""
        staged = self.staging[key]
        cuda.copy_to_host(staged.ptr, self.device[key].ptr, staged.array[0].nbytes, stream)

    def host(self, key: str) -> np.ndarray:
        return self.staging[key].array[0]

    def close(self) -> None:
        for buffer in (*self.device.values(), *self.staging.values()):
            buffer.free()
        self.device.clear()
        self.staging.clear()

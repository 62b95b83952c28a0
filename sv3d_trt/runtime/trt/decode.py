"""The VAE decoder over fixed-size chunks: every padded chunk of the latent gets its own input
slot (uploaded in one copy), and two output slots alternate so that chunk k + 1 decodes on the
compute stream while a second stream copies chunk k to pinned memory."""
from __future__ import annotations

import numpy as np

from ..backend import pad_chunk
from .. import cuda
from .buffers import Buffers
from .engines import Engines
from .plan import BufferPlan, decode_schedule


class ChunkedDecoder:
    def __init__(self, plan: BufferPlan, engines: Engines, buffers: Buffers, stream: cuda.Stream, frames: int):
        self.engines, self.buffers, self.stream = engines, buffers, stream
        self.chunk = plan.decode_chunk
        self.inputs, self.outputs = plan.buffers["vae_decoder.latent"], plan.buffers["vae_decoder.frames"]
        self.copy_stream = cuda.Stream()  # copy-out only
        self.frames_host = cuda.PinnedArray((frames, *self.outputs.shape[1:]), self.outputs.dtype)
        self._decoded = [cuda.Event() for _ in range(self.outputs.slots)]  # output slot written
        self._copied = [cuda.Event() for _ in range(self.outputs.slots)]  # output slot read back

    def decode(self, latent: np.ndarray) -> np.ndarray:
        """latent (T,4,h,w), already divided by the VAE scale -> frames (T,3,S,S) float32."""
        n, inputs, outputs = self.chunk, self.inputs, self.outputs
        in_ptr, out_ptr = self.buffers.device["vae_decoder.latent"].ptr, self.buffers.device["vae_decoder.frames"].ptr
        staged = self.buffers.staging["vae_decoder.latent"]  # (chunks, n, 4, h, w), packed
        schedule = decode_schedule(len(latent), n, outputs.slots)
        for k, start, stop, _ in schedule:
            staged.array[k] = pad_chunk(np.asarray(latent[start:stop]), n)
            cuda.copy_to_device(in_ptr + k * inputs.slot_bytes, staged, self.stream, nbytes=inputs.nbytes,
                                src_ptr=staged.ptr + k * inputs.nbytes)
        frame_bytes = outputs.nbytes // n
        for k, start, stop, slot in schedule:
            if k >= outputs.slots:
                self.stream.wait(self._copied[slot])  # chunk k - slots has left this output slot
            self.engines.set_address("vae_decoder", "latent", in_ptr + k * inputs.slot_bytes)
            self.engines.set_address("vae_decoder", "frames", out_ptr + slot * outputs.slot_bytes)
            self.engines.enqueue("vae_decoder", self.stream)
            self._decoded[slot].record(self.stream)
            self.copy_stream.wait(self._decoded[slot])
            cuda.copy_to_host(self.frames_host.ptr + start * frame_bytes, out_ptr + slot * outputs.slot_bytes,
                              (stop - start) * frame_bytes, self.copy_stream)
            self._copied[slot].record(self.copy_stream)
        self.copy_stream.synchronize()  # sync: frames go back to the caller
        return self.frames_host.array[: len(latent)].astype(np.float32)  # (T, 3, S, S)

    def close(self) -> None:
        self.copy_stream.synchronize()
        self.frames_host.free()

"""The denoise loop on the engines: every x_i in its own device slot, the schedule in a device
array (plan.py), the whole loop captured once per step count into a CUDA graph and replayed
with no host work; plus the protocol's single-step path (parity checks, debugging)."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..backend import non_finite_error
from .. import cuda
from .engines import Engines
from .plan import BufferPlan, BufferSpec, first_non_finite, sigma_slots, step_addresses

log = logging.getLogger(__name__)


def enqueue_steps(engines: Engines, stream: cuda.Stream, addresses: list[dict[str, int]]) -> None:
    """One denoise_step per entry, its four per-step tensors bound to the given addresses."""
    for step in addresses:
        for name, ptr in step.items():
            engines.set_address("denoise_step", name, ptr)
        engines.enqueue("denoise_step", stream)


class CapturedLoop:
    """Latent slots and the sigma array for the longest schedule seen; one graph per step count."""

    def __init__(self, plan: BufferPlan, engines: Engines, stream: cuda.Stream, cuda_graph: bool = True):
        self.plan, self.engines, self.stream, self.cuda_graph = plan, engines, stream, cuda_graph
        self._latents: tuple[BufferSpec, cuda.DeviceBuffer, cuda.PinnedArray] | None = None
        self._sigmas: tuple[BufferSpec, cuda.DeviceBuffer] | None = None
        self._uploaded_sigmas: np.ndarray | None = None
        self._graphs: dict[int, cuda.Graph | None] = {}  # steps -> captured loop (None: eager)

    def _buffers(self, steps: int, sigmas: np.ndarray):
        """Latent slots and the sigma array for `steps`; growing them drops captured graphs."""
        if self._latents is None or self._latents[0].slots < steps + 1:
            self._graphs.clear()
            self._latents = None  # free the old slots before allocating more
            spec = self.plan.latents(steps)
            self._latents = (spec, cuda.DeviceBuffer(spec.total_bytes, "latent slots"),
                             cuda.PinnedArray((spec.slots, spec.slot_bytes // spec.dtype.itemsize), spec.dtype))
            spec_s = self.plan.sigmas(steps)
            self._sigmas = (spec_s, cuda.DeviceBuffer(spec_s.total_bytes, "sigmas"))
            self._uploaded_sigmas = None
        if self._uploaded_sigmas is None or not np.array_equal(self._uploaded_sigmas, sigmas):
            # Same addresses, new values: captured graphs stay valid. Uploaded once per schedule.
            spec_s, buf = self._sigmas
            host = sigma_slots(np.pad(sigmas, (0, spec_s.slots - len(sigmas))), spec_s)
            staged = cuda.PinnedArray(host.shape, host.dtype)
            staged.array[...] = host
            cuda.copy_to_device(buf.ptr, staged, self.stream)
            self.stream.synchronize()  # sync: once per new schedule, before `staged` is freed
            self._uploaded_sigmas = np.array(sigmas)
        return self._latents, self._sigmas

    def _graph(self, steps: int, addresses: list[dict[str, int]]) -> cuda.Graph | None:
        """The captured loop for `steps` (None: this context cannot be captured, run eagerly)."""
        if steps in self._graphs:
            return self._graphs[steps]
        graph = None
        if self.cuda_graph:
            # Warm-up outside the capture: the first enqueue does lazy setup (TensorRT-RTX
            # compiles its kernels there), which a capture would reject.
            enqueue_steps(self.engines, self.stream, addresses[:1])
            self.stream.synchronize()  # sync: once per step count
            if self.engines.capturable("denoise_step", self.stream):
                with cuda.Graph.capture(self.stream) as graph:
                    enqueue_steps(self.engines, self.stream, addresses)
            else:
                log.warning("the denoise_step context is not stream-capturable; running the loop eagerly")
        self._graphs[steps] = graph
        return graph

    def run(self, x0: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
        """x0 (T,4,h,w) -> x_steps (T,4,h,w) float32; NumericsError naming the first step that
        produced NaN/inf (read from the kept slots, so the loop itself never syncs)."""
        steps = len(sigmas) - 1
        (spec, latents, host), (spec_s, sigma_buf) = self._buffers(steps, np.asarray(sigmas, np.float64))
        addresses = step_addresses(latents.ptr, spec.slot_bytes, sigma_buf.ptr, spec_s.slot_bytes, steps)
        graph = self._graph(steps, addresses)
        size = int(np.prod(spec.shape))
        host.array[0, :size] = np.asarray(x0).reshape(-1)
        cuda.copy_to_device(latents.ptr, host, self.stream, nbytes=spec.nbytes)
        if graph is not None:
            graph.launch(self.stream)
        else:
            enqueue_steps(self.engines, self.stream, addresses)
        last = steps * spec.slot_bytes
        cuda.copy_to_host(host.ptr + last, latents.ptr + last, spec.nbytes, self.stream)
        self.stream.synchronize()  # sync: the only one of the loop
        result = host.array[steps, :size].reshape(spec.shape).astype(np.float32)  # (T, 4, h, w)
        if not np.isfinite(result).all():
            cuda.copy_to_host(host.ptr, latents.ptr, spec.slot_bytes * (steps + 1), self.stream)
            self.stream.synchronize()  # sync: failure path only
            first = first_non_finite(host.array[: steps + 1, :size])
            raise non_finite_error(steps - 1 if first is None else first, sigmas)
        return result

    def close(self) -> None:
        self._graphs.clear()  # graphs before the memory they point into
        for part in (self._latents, self._sigmas):
            for buffer in (part or ())[1:]:
                buffer.free()
        self._latents = self._sigmas = self._uploaded_sigmas = None


@dataclass
class DeviceLatent:
    """A latent living in slot `slot` of the single-step scratch (the protocol's `step`)."""

    slot: int


class SingleStep:
    """The protocol's `to_native` / `step` / `to_numpy`: two latent slots, eager enqueue."""

    def __init__(self, plan: BufferPlan, engines: Engines, stream: cuda.Stream):
        self.engines, self.stream = engines, stream
        self.latent = plan.latent
        spec = BufferSpec("step", self.latent.shape, self.latent.np_dtype, slots=2)
        self.spec_s = plan.sigmas(1)
        self.slot_bytes = spec.slot_bytes
        self.latents = cuda.DeviceBuffer(spec.total_bytes, "step scratch")
        self.sigmas = cuda.DeviceBuffer(self.spec_s.total_bytes, "step sigmas")
        self.host = cuda.PinnedArray((2, spec.slot_bytes // spec.dtype.itemsize), spec.dtype)
        self.host_sigmas = cuda.PinnedArray((2, self.spec_s.slot_bytes // self.spec_s.dtype.itemsize),
                                            self.spec_s.dtype)

    def to_native(self, x: np.ndarray) -> DeviceLatent:
        self.host.array[0, : x.size] = np.asarray(x).reshape(-1)
        cuda.copy_to_device(self.latents.ptr, self.host, self.stream, nbytes=self.latent.nbytes)
        return DeviceLatent(0)

    def to_numpy(self, x: DeviceLatent) -> np.ndarray:
        offset = x.slot * self.slot_bytes
        cuda.copy_to_host(self.host.ptr + offset, self.latents.ptr + offset, self.latent.nbytes, self.stream)
        self.stream.synchronize()  # sync: host read
        size = int(np.prod(self.latent.shape))
        return self.host.array[x.slot, :size].reshape(self.latent.shape).astype(np.float32)

    def step(self, x: DeviceLatent, sigma: float, sigma_next: float) -> DeviceLatent:
        """Queue one step from slot x.slot into the other. The caller has synchronized the stream
        (the sigma staging of the previous step is reused) and made the generation resident."""
        self.host_sigmas.array[...] = sigma_slots(np.array([sigma, sigma_next]), self.spec_s)
        cuda.copy_to_device(self.sigmas.ptr, self.host_sigmas, self.stream)
        out = 1 - x.slot
        enqueue_steps(self.engines, self.stream, [{
            "x": self.latents.ptr + x.slot * self.slot_bytes, "x_next": self.latents.ptr + out * self.slot_bytes,
            "sigma": self.sigmas.ptr, "sigma_next": self.sigmas.ptr + self.spec_s.slot_bytes}])
        return DeviceLatent(out)

    def close(self) -> None:
        for buffer in (self.latents, self.sigmas, self.host, self.host_sigmas):
            buffer.free()

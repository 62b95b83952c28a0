"""`tensorrt` / `tensorrt-rtx`: the engines of `sv3d-trt build`, run with TensorRT + cuda-python + numpy.

No torch anywhere on this path. Loading, in order:

1. manifest.json is checked before any engine is read: TensorRT flavour and version, this
   GPU's architecture among the build targets, the SV3D config/variant, file sizes
   (StaleEngineError with the exact rebuild command otherwise).
2. The buffer plan (trt_plan.py) comes from the manifest's IO lists; every buffer is allocated
   once and reused by every request; host staging is pinned.
3. Engines are deserialized (after registering the TemporalAttention plugin creator when the
   engines carry plugin layers) and each gets an execution context; the contexts never run
   concurrently (one stream), so they share one scratch allocation the size of the largest.
   TensorRT-RTX contexts share one runtime cache, loaded from and saved beside the engines
   (`runtime_cache.smXY.bin`): its kernels are compiled on this GPU at the first run and
   reused by every later process.

Per request: encode (clip + vae_encoder), context once per generation into the buffers the
step reads, then the denoise loop replayed from a CUDA graph captured once per step count:
each captured step reads its latent and its sigma pair through pointer offsets into device
arrays (trt_plan.py), so the loop needs no host work and no sync. The VAE decodes in the
engine's chunk size; a second stream copies chunk k to pinned memory while chunk k + 1 decodes.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cameras import COND_AUG
from ..contract.graphs import GRAPH_NAMES
from ..contract.manifest import (
    Manifest,
    arch_name,
    check_compatible,
    engines_use_plugins,
    load_manifest,
    source_export_info,
)
from ..contract.tensorrt import import_tensorrt, logger_class
from ..errors import BackendUnavailableError, StaleEngineError
from ..fileio import write_bytes_atomic
from ..models.config import SV3DConfig, get_config
from ..sampler import initial_noise_scale
from . import cuda
from .backend import Backend, Conditioning, non_finite_error, pad_chunk
from .trt_plan import (
    BufferPlan,
    BufferSpec,
    decode_schedule,
    first_non_finite,
    plan_buffers,
    runtime_cache_name,
    sigma_slots,
    step_addresses,
)

log = logging.getLogger(__name__)

# Buffers with pinned host staging: the ones the host writes or reads; the rest stay on the GPU.
STAGED = ("clip.image", "vae_encoder.image", "clip_embedding", "vae_encoder.latent", "denoise_step.concat_latent",
          "denoise_step.vector", "denoise_step.cfg_scales", "vae_decoder.latent")


def device_index(device: str | int) -> int:
    """'cuda' / 'cuda:1' / 1 -> GPU index."""
    if isinstance(device, int):
        return device
    kind, _, index = str(device).partition(":")
    if kind != "cuda":
        raise BackendUnavailableError(f"TensorRT engines run on a CUDA GPU, not {device!r}; use --device cuda")
    return int(index or 0)


def check_engine_files(manifest: Manifest) -> None:
    """Every engine present with the size the manifest records (cheap; `sv3d-trt verify` hashes)."""
    problems = []
    for graph, entry in manifest.engines.items():
        path = manifest.engine_path(graph)
        if not path.is_file():
            problems.append(f"{path} is missing")
        elif "bytes" in entry and path.stat().st_size != entry["bytes"]:
            problems.append(f"{path} has {path.stat().st_size} bytes, the manifest says {entry['bytes']}")
    if problems:
        raise StaleEngineError("; ".join(problems) + f". Rebuild with: {manifest.rebuild_command()}")


def check_engines(manifest: Manifest, backend: str, trt_version: str,
                  capability: tuple[int, int]) -> tuple[SV3DConfig, BufferPlan]:
    """Everything decidable before deserializing: flavour, version, GPU architecture, the SV3D
    config and the engines' IO, the files. Returns the config and the buffer plan; raises
    StaleEngineError with the rebuild command (BackendUnavailableError when no rebuild of this
    flavour can help)."""
    if backend == "tensorrt-rtx" and tuple(capability) == (9, 0):
        raise BackendUnavailableError(
            "TensorRT-RTX engines do not run on Hopper (sm90) GPUs; build full TensorRT engines: "
            f"{manifest.rebuild_command(backend='tensorrt', targets=[])}"
        )
    export = manifest.data.get("export", {})
    if "config" not in export or "variant" not in export:
        raise StaleEngineError(f"{manifest.directory}/manifest.json does not record the SV3D config; "
                               f"rebuild with: {manifest.rebuild_command()}")
    config = get_config(export["config"], export["variant"])
    check_compatible(manifest, backend, trt_version, capability, variant=config.variant)
    plan = plan_buffers(manifest.engines, config, rebuild=manifest.rebuild_command())
    check_engine_files(manifest)
    return config, plan


@dataclass
class Prepared:
    """What `prepare` received; uploaded (and the context engine run) when a loop needs it."""

    clip_embedding: np.ndarray  # (1, D)
    concat_latent: np.ndarray  # (1, 4, h, w)
    vector: np.ndarray  # (T, adm)
    cfg_scales: np.ndarray  # (T,)


@dataclass
class DeviceLatent:
    """A latent living in slot `slot` of the single-step scratch (the protocol's `step`)."""

    slot: int


class TensorRTBackend(Backend):
    name = "tensorrt"
    torch_noise = False  # an engines-only process never imports torch (noise: numpy Philox)

    def __init__(self, directory: str | Path, device: str | int = "cuda", cuda_graph: bool = True):
        self.directory = Path(directory)
        self.manifest = manifest = load_manifest(self.directory)
        self.trt = trt = import_tensorrt(self.name)
        self.device_index = device_index(device)
        self.device = f"cuda:{self.device_index}"
        try:
            cuda.set_device(self.device_index)
        except BackendUnavailableError as e:
            raise BackendUnavailableError(f"the {self.name} backend needs an NVIDIA GPU and driver: {e}") from e
        self.capability = cuda.compute_capability(self.device_index)
        # 1. the manifest decides whether these engines can load here, before any engine is read
        config, self.plan = check_engines(manifest, self.name, trt.__version__, self.capability)
        super().__init__(config)
        if engines_use_plugins(manifest.data, source_export_info(manifest)) is not False:
            from ..kernels.trt_plugin import register_temporal_attention_plugin

            register_temporal_attention_plugin(trt)

        # 2. engines and contexts; one scratch allocation shared by every context
        self.logger = logger_class(trt)()
        self.runtime = trt.Runtime(self.logger)
        self.engines = {g: self._deserialize(g) for g in GRAPH_NAMES}
        self._check_engine_io()
        scratch = max(int(getattr(e, "device_memory_size_v2", None) or e.device_memory_size)
                      for e in self.engines.values())
        self.scratch = cuda.DeviceBuffer(scratch, "TensorRT scratch")
        self._runtime_cache = None
        self.contexts = {g: self._context(g) for g in GRAPH_NAMES}

        # 3. buffers, staging and streams, allocated once
        self.stream = cuda.Stream()
        self.copy_stream = cuda.Stream()  # decode copy-out only
        self.buffers = {k: cuda.DeviceBuffer(b.total_bytes, k) for k, b in self.plan.buffers.items()}
        self.staging = {k: cuda.PinnedArray((b.slots, *b.shape), b.dtype)
                        for k, b in self.plan.buffers.items() if k in STAGED}
        frames = self.plan.buffers["vae_decoder.frames"]
        self.frames_host = cuda.PinnedArray((self.config.num_frames, *frames.shape[1:]), frames.dtype)
        self._decoded = [cuda.Event() for _ in range(frames.slots)]  # output slot written
        self._copied = [cuda.Event() for _ in range(frames.slots)]  # output slot read back
        for graph, names in self.plan.bindings.items():
            for name, key in names.items():
                self._set_address(graph, name, self.buffers[key].ptr)
        self.use_cuda_graph = cuda_graph
        self._latents: tuple[BufferSpec, cuda.DeviceBuffer, cuda.PinnedArray] | None = None
        self._sigmas: tuple[BufferSpec, cuda.DeviceBuffer] | None = None
        self._uploaded_sigmas: np.ndarray | None = None
        self._graphs: dict[int, cuda.Graph | None] = {}  # steps -> captured loop (None: eager)
        self._resident: Prepared | None = None
        self._step_scratch: tuple | None = None
        self._cache_dirty = self._runtime_cache is not None

    @classmethod
    def from_artifacts(cls, path, device: str | int = "cuda", cuda_graph: bool = True, **_) -> "TensorRTBackend":
        return cls(path, device=device, cuda_graph=cuda_graph)

    # -- loading ------------------------------------------------------------------------

    def _deserialize(self, graph: str):
        path = self.manifest.engine_path(graph)
        engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            errors = "; ".join(self.logger.errors[-3:]) or "no reason logged"
            self.logger.errors.clear()
            raise StaleEngineError(
                f"{self.name} {self.trt.__version__} cannot load {path} on this {arch_name(self.capability)} GPU "
                f"({errors}). Rebuild with: "
                f"{self.manifest.rebuild_command(backend=self.name, targets=[arch_name(self.capability)])}"
            )
        return engine

    def _check_engine_io(self) -> None:
        """The engines' own IO must be what the manifest (and so the plan) says."""
        problems = []
        for graph, engine in self.engines.items():
            names = {engine.get_tensor_name(i) for i in range(engine.num_io_tensors)}
            for name, spec in self.plan.tensors[graph].items():
                if name not in names:
                    problems.append(f"{graph} engine has no tensor {name!r}")
                elif tuple(engine.get_tensor_shape(name)) != spec.shape:
                    problems.append(f"{graph}.{name} is {tuple(engine.get_tensor_shape(name))} in the engine, "
                                    f"{spec.shape} in the manifest")
        if problems:
            raise StaleEngineError("; ".join(problems) + f". Rebuild with: {self.manifest.rebuild_command()}")

    def _context(self, graph: str):
        trt = self.trt
        context = self.engines[graph].create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        if context is None:
            raise BackendUnavailableError(f"cannot create a TensorRT context for {graph}: "
                                          + ("; ".join(self.logger.errors[-3:]) or "no reason logged"))
        self._share_scratch(context)
        return context

    def _share_scratch(self, context) -> None:
        if hasattr(context, "set_device_memory"):  # TensorRT >= 10.1, TensorRT-RTX
            context.set_device_memory(self.scratch.ptr, self.scratch.nbytes)
        else:
            context.device_memory = self.scratch.ptr

    def _set_address(self, graph: str, name: str, ptr: int) -> None:
        if not self.contexts[graph].set_tensor_address(name, ptr):
            raise BackendUnavailableError(f"TensorRT refused the address of {graph}.{name}")

    def synchronize(self) -> None:
        """Wait for the stream (benchmarks time steps against this, not a host copy)."""
        self.stream.synchronize()  # sync

    def describe(self) -> dict:
        return {
            "backend": self.name,
            "tensorrt": self.trt.__version__,
            "gpu": cuda.device_name(self.device_index),
            "compute_capability": arch_name(self.capability),
            "engines": str(self.directory.resolve()),
            "precision": self.manifest.precision.value,
            "built_for": self.manifest.targets,
            "decode_chunk": self.plan.decode_chunk,
            "cuda_graph": self.use_cuda_graph,
            "device_buffers_mb": round((self.plan.fixed_bytes + self.scratch.nbytes) / 2**20, 1),
        }

    # -- staging ------------------------------------------------------------------------

    def _upload(self, key: str, array: np.ndarray) -> None:
        staged = self.staging[key].array  # (slots, *shape)
        staged[0] = array
        cuda.copy_to_device(self.buffers[key].ptr, self.staging[key], self.stream, nbytes=staged[0].nbytes)

    def _download(self, key: str) -> None:
        staged = self.staging[key]
        cuda.copy_to_host(staged.ptr, self.buffers[key].ptr, staged.array[0].nbytes, self.stream)

    def _enqueue(self, graph: str) -> None:
        if not self.contexts[graph].execute_async_v3(self.stream.ptr):
            errors = "; ".join(self.logger.errors[-3:]) or "no reason logged"
            self.logger.errors.clear()
            raise BackendUnavailableError(f"TensorRT could not run {graph}: {errors}")

    # -- stages -------------------------------------------------------------------------

    def encode(self, image: np.ndarray, cond_noise: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        image = np.asarray(image, dtype=np.float32)  # (1, 3, S, S) in [-1, 1]
        self._upload("clip.image", image)
        self._upload("vae_encoder.image", image + np.float32(COND_AUG) * cond_noise)
        self._enqueue("clip")
        self._enqueue("vae_encoder")
        self._download("clip_embedding")
        self._download("vae_encoder.latent")
        self.stream.synchronize()  # sync: the conditioning goes back to the caller
        clip = self.staging["clip_embedding"].array[0].astype(np.float32)  # (1, D)
        latent = self.staging["vae_encoder.latent"].array[0].astype(np.float32)  # (1, 4, h, w)
        return clip, latent

    def prepare(self, cond: Conditioning, vector: np.ndarray, cfg_scales: np.ndarray) -> Prepared:
        return Prepared(cond.clip_embedding, cond.concat_latent, vector, cfg_scales)

    def _make_resident(self, state: Prepared) -> None:
        """Upload a generation's inputs and run the context engine into the attn2 buffers,
        unless they are already there (the captured loop reads these fixed addresses)."""
        if self._resident is state:
            return
        self._upload("clip_embedding", state.clip_embedding)
        self._enqueue("context")
        self._upload("denoise_step.concat_latent", state.concat_latent)
        self._upload("denoise_step.vector", state.vector)
        self._upload("denoise_step.cfg_scales", state.cfg_scales)
        self._resident = state

    def _loop_buffers(self, steps: int, sigmas: np.ndarray):
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

    def _enqueue_steps(self, addresses: list[dict[str, int]]) -> None:
        for step in addresses:
            for name, ptr in step.items():
                self._set_address("denoise_step", name, ptr)
            self._enqueue("denoise_step")

    def _loop(self, steps: int, addresses: list[dict[str, int]]) -> cuda.Graph | None:
        """The captured loop for `steps` (None: this context cannot be captured, run eagerly)."""
        if steps in self._graphs:
            return self._graphs[steps]
        graph = None
        if self.use_cuda_graph:
            # Warm-up outside the capture: the first enqueue does lazy setup (TensorRT-RTX
            # compiles its kernels there), which a capture would reject.
            self._enqueue_steps(addresses[:1])
            self.stream.synchronize()  # sync: once per step count
            capturable = getattr(self.contexts["denoise_step"], "is_stream_capturable", lambda s: True)
            if capturable(self.stream.ptr):
                with cuda.Graph.capture(self.stream) as graph:
                    self._enqueue_steps(addresses)
            else:
                log.warning("the denoise_step context is not stream-capturable; running the loop eagerly")
        self._graphs[steps] = graph
        return graph

    def denoise(self, state: Prepared, noise: np.ndarray, sigmas: np.ndarray, on_step=None) -> np.ndarray:
        steps = len(sigmas) - 1
        self._make_resident(state)
        (spec, latents, host), (spec_s, sigma_buf) = self._loop_buffers(steps, np.asarray(sigmas, np.float64))
        addresses = step_addresses(latents.ptr, spec.slot_bytes, sigma_buf.ptr, spec_s.slot_bytes, steps)
        graph = self._loop(steps, addresses)
        x0 = host.array[0, : int(np.prod(spec.shape))]
        x0[...] = (noise * np.float32(initial_noise_scale(float(sigmas[0])))).reshape(-1)
        cuda.copy_to_device(latents.ptr, host, self.stream, nbytes=spec.nbytes)
        if graph is not None:
            graph.launch(self.stream)
        else:
            self._enqueue_steps(addresses)
        last = steps * spec.slot_bytes
        cuda.copy_to_host(host.ptr + last, latents.ptr + last, spec.nbytes, self.stream)
        self.stream.synchronize()  # sync: the only one of the loop
        flat = host.array[steps, : int(np.prod(spec.shape))]
        result = flat.reshape(spec.shape).astype(np.float32)  # (T, 4, h, w)
        if not np.isfinite(result).all():
            cuda.copy_to_host(host.ptr, latents.ptr, spec.slot_bytes * (steps + 1), self.stream)
            self.stream.synchronize()  # sync: failure path only
            slots = host.array[: steps + 1, : int(np.prod(spec.shape))]
            first = first_non_finite(slots)
            raise non_finite_error(steps - 1 if first is None else first, sigmas)
        if on_step is not None:  # the loop ran as one graph: report its steps at the end
            for i in range(steps):
                on_step(i)
        return result

    # The single-step protocol (parity checks, debugging): two scratch slots, eager enqueue.

    def _scratch_slots(self):
        if self._step_scratch is None:
            x = self.plan.latent
            spec = BufferSpec("step", x.shape, x.np_dtype, slots=2)
            spec_s = self.plan.sigmas(1)
            self._step_scratch = (cuda.DeviceBuffer(spec.total_bytes, "step scratch"),
                                  cuda.DeviceBuffer(spec_s.total_bytes, "step sigmas"),
                                  cuda.PinnedArray((2, spec.slot_bytes // x.np_dtype.itemsize), x.np_dtype),
                                  cuda.PinnedArray((2, spec_s.slot_bytes // spec_s.dtype.itemsize), spec_s.dtype))
        return self._step_scratch

    def to_native(self, x: np.ndarray) -> DeviceLatent:
        latents, _, host, _ = self._scratch_slots()
        spec = self.plan.latent
        host.array[0, : x.size] = np.asarray(x).reshape(-1)
        cuda.copy_to_device(latents.ptr, host, self.stream, nbytes=spec.nbytes)
        return DeviceLatent(0)

    def to_numpy(self, x: DeviceLatent) -> np.ndarray:
        latents, _, host, _ = self._scratch_slots()
        spec = self.plan.latent
        slot_bytes = host.array.shape[1] * spec.np_dtype.itemsize
        cuda.copy_to_host(host.ptr + x.slot * slot_bytes, latents.ptr + x.slot * slot_bytes, spec.nbytes, self.stream)
        self.stream.synchronize()  # sync: host read
        return host.array[x.slot, : int(np.prod(spec.shape))].reshape(spec.shape).astype(np.float32)

    def step(self, state: Prepared, x: DeviceLatent, sigma: float, sigma_next: float) -> DeviceLatent:
        self.stream.synchronize()  # sync: the sigma staging of the previous step is reused
        self._make_resident(state)
        latents, sigma_buf, host, staged = self._scratch_slots()
        spec_s = self.plan.sigmas(1)
        staged.array[...] = sigma_slots(np.array([sigma, sigma_next]), spec_s)
        cuda.copy_to_device(sigma_buf.ptr, staged, self.stream)
        slot_bytes = host.array.shape[1] * host.array.dtype.itemsize
        out = 1 - x.slot
        self._enqueue_steps([{"x": latents.ptr + x.slot * slot_bytes, "x_next": latents.ptr + out * slot_bytes,
                              "sigma": sigma_buf.ptr, "sigma_next": sigma_buf.ptr + spec_s.slot_bytes}])
        return DeviceLatent(out)

    def decode(self, latent: np.ndarray, chunk: int) -> np.ndarray:
        """Decode in the engine's chunk size (fixed at export; `chunk` is ignored), chunk k's
        copy-out on the copy stream overlapping chunk k + 1's decode."""
        n = self.plan.decode_chunk
        inputs, outputs = self.plan.buffers["vae_decoder.latent"], self.plan.buffers["vae_decoder.frames"]
        in_ptr, out_ptr = self.buffers["vae_decoder.latent"].ptr, self.buffers["vae_decoder.frames"].ptr
        staged = self.staging["vae_decoder.latent"]  # (chunks, n, 4, h, w), packed
        schedule = decode_schedule(len(latent), n, outputs.slots)
        for k, start, stop, _ in schedule:
            staged.array[k] = pad_chunk(np.asarray(latent[start:stop]), n)
            cuda.copy_to_device(in_ptr + k * inputs.slot_bytes, staged, self.stream, nbytes=inputs.nbytes,
                                src_ptr=staged.ptr + k * inputs.nbytes)
        frame_bytes = outputs.nbytes // n
        for k, start, stop, slot in schedule:
            if k >= outputs.slots:
                self.stream.wait(self._copied[slot])  # chunk k - slots has left this output slot
            self._set_address("vae_decoder", "latent", in_ptr + k * inputs.slot_bytes)
            self._set_address("vae_decoder", "frames", out_ptr + slot * outputs.slot_bytes)
            self._enqueue("vae_decoder")
            self._decoded[slot].record(self.stream)
            self.copy_stream.wait(self._decoded[slot])
            cuda.copy_to_host(self.frames_host.ptr + start * frame_bytes, out_ptr + slot * outputs.slot_bytes,
                              (stop - start) * frame_bytes, self.copy_stream)
            self._copied[slot].record(self.copy_stream)
        self.copy_stream.synchronize()  # sync: frames go back to the caller
        frames = self.frames_host.array[: len(latent)].astype(np.float32)  # (T, 3, S, S)
        self._save_runtime_cache()
        return frames

    def _save_runtime_cache(self) -> None:
        """Hook for TensorRT-RTX's runtime cache; full TensorRT has none."""

    def close(self) -> None:
        self._save_runtime_cache()


class TensorRTRTXBackend(TensorRTBackend):
    """TensorRT-RTX: engines compiled ahead of time, kernels JIT-compiled on this GPU at the
    first run and kept in a runtime cache file beside the engines."""

    name = "tensorrt-rtx"

    @property
    def runtime_cache_path(self) -> Path:
        return self.directory / runtime_cache_name(self.capability)

    def _context(self, graph: str):
        trt = self.trt
        engine = self.engines[graph]
        config = engine.create_runtime_config()
        config.set_execution_context_allocation_strategy(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        if self._runtime_cache is None:  # one cache shared by every engine's config
            self._runtime_cache = config.create_runtime_cache()
            path = self.runtime_cache_path
            if path.is_file() and not self._runtime_cache.deserialize(path.read_bytes()):
                log.warning("%s was made by another GPU/driver/TensorRT-RTX; recompiling kernels", path)
        config.set_runtime_cache(self._runtime_cache)
        context = engine.create_execution_context(config)
        if context is None:
            raise BackendUnavailableError(f"cannot create a TensorRT-RTX context for {graph}: "
                                          + ("; ".join(self.logger.errors[-3:]) or "no reason logged"))
        self._share_scratch(context)
        return context

    def _save_runtime_cache(self) -> None:
        if not self._cache_dirty:
            return
        try:
            write_bytes_atomic(self.runtime_cache_path, bytes(memoryview(self._runtime_cache.serialize())))
            self._cache_dirty = False
        except OSError as e:  # a read-only engine directory: run on, compile again next time
            log.warning("cannot save the TensorRT-RTX runtime cache to %s (%s)", self.runtime_cache_path, e)
            self._cache_dirty = False

    def describe(self) -> dict:
        return {**super().describe(), "runtime_cache": str(self.runtime_cache_path)}

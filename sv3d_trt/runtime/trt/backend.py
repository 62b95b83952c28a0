"""TensorRTBackend / TensorRTRTXBackend: the protocol's stages over the parts of this package.

    checks.py   manifest, GPU, config and files, before any engine is read
    plan.py     the device-memory plan from the manifest (pure)
    engines.py  deserialized engines + contexts (+ the TensorRT-RTX runtime cache)
    buffers.py  fixed device buffers and pinned staging
    loop.py     the captured denoise loop, and the single-step path
    decode.py   the chunked, copy-overlapped VAE decoder
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...contract.manifest import arch_name, engines_use_plugins, load_manifest, source_export_info
from ...contract.tensorrt import import_tensorrt
from ...errors import BackendUnavailableError
from .. import cuda
from ..backend import Backend, Conditioning
from .buffers import Buffers
from .checks import check_engines, device_index
from .decode import ChunkedDecoder
from .engines import Engines, RTXEngines
from .loop import CapturedLoop, DeviceLatent, SingleStep


@dataclass
class Prepared:
    """What `prepare` received; uploaded (and the context engine run) when a loop needs it."""

    clip_embedding: np.ndarray  # (1, D)
    concat_latent: np.ndarray  # (1, 4, h, w)
    vector: np.ndarray  # (T, adm)
    cfg_scales: np.ndarray  # (T,)


class TensorRTBackend(Backend):
    name = "tensorrt"
    torch_noise = False  # an engines-only process never imports torch (noise: numpy Philox)
    engine_set = Engines

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
            from ...kernels.trt_plugin import register_temporal_attention_plugin

            register_temporal_attention_plugin(trt)
        # 2. engines and contexts, then every buffer and stream, allocated once
        self.engines = self.engine_set(trt, manifest, self.plan, self.capability, self.name)
        self.stream = cuda.Stream()
        self.buffers = Buffers(self.plan, self.engines)
        self.loop = CapturedLoop(self.plan, self.engines, self.stream, cuda_graph=cuda_graph)
        self.decoder = ChunkedDecoder(self.plan, self.engines, self.buffers, self.stream, config.num_frames)
        self.use_cuda_graph = cuda_graph
        self._single_step: SingleStep | None = None
        self._resident: Prepared | None = None
        self._closed = False

    @classmethod
    def from_artifacts(cls, path, device: str | int = "cuda", cuda_graph: bool = True, **_) -> "TensorRTBackend":
        return cls(path, device=device, cuda_graph=cuda_graph)

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
            "device_buffers_mb": round((self.plan.fixed_bytes + self.engines.scratch.nbytes) / 2**20, 1),
        }

    # -- lifecycle ------------------------------------------------------------------------

    def synchronize(self) -> None:
        """Wait for the stream (benchmarks time steps against this, not a host copy)."""
        self.stream.synchronize()  # sync

    def warmup(self, steps: int = 50, decode_chunk: int = 14) -> None:
        """Every engine once and the loop for `steps` captured; then the kernels TensorRT-RTX
        compiled on this GPU are saved, so later processes skip the compile."""
        super().warmup(steps=steps, decode_chunk=decode_chunk)
        self.engines.save_runtime_cache()

    def close(self) -> None:
        """Free graphs, buffers, contexts and engines (saving the TensorRT-RTX runtime cache)."""
        if self._closed:
            return
        self.stream.synchronize()  # sync: nothing may still run on what is freed below
        self.loop.close()
        if self._single_step is not None:
            self._single_step.close()
        self.decoder.close()
        self.buffers.close()
        self.engines.close()
        self._resident = None
        self._closed = True

    # -- stages -------------------------------------------------------------------------

    def encode(self, image: np.ndarray, noised_image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.buffers.upload("clip.image", image, self.stream)  # (1, 3, S, S) in [-1, 1]
        self.buffers.upload("vae_encoder.image", noised_image, self.stream)
        self.engines.enqueue("clip", self.stream)
        self.engines.enqueue("vae_encoder", self.stream)
        self.buffers.download("clip_embedding", self.stream)
        self.buffers.download("vae_encoder.latent", self.stream)
        self.stream.synchronize()  # sync: the conditioning goes back to the caller
        clip = self.buffers.host("clip_embedding").astype(np.float32)  # (1, D)
        latent = self.buffers.host("vae_encoder.latent").astype(np.float32)  # (1, 4, h, w)
        return clip, latent

    def prepare(self, cond: Conditioning, vector: np.ndarray, cfg_scales: np.ndarray) -> Prepared:
        return Prepared(cond.clip_embedding, cond.concat_latent, vector, cfg_scales)

    def _make_resident(self, state: Prepared) -> None:
        """Upload a generation's inputs and run the context engine into the attn2 buffers,
        unless they are already there (the captured loop reads these fixed addresses)."""
        if self._resident is state:
            return
        self.buffers.upload("clip_embedding", state.clip_embedding, self.stream)
        self.engines.enqueue("context", self.stream)
        self.buffers.upload("denoise_step.concat_latent", state.concat_latent, self.stream)
        self.buffers.upload("denoise_step.vector", state.vector, self.stream)
        self.buffers.upload("denoise_step.cfg_scales", state.cfg_scales, self.stream)
        self._resident = state

    def denoise(self, state: Prepared, x0: np.ndarray, sigmas: np.ndarray, on_step=None) -> np.ndarray:
        self._make_resident(state)
        result = self.loop.run(x0, sigmas)
        if on_step is not None:  # the loop ran as one graph: report its steps at the end
            for i in range(len(sigmas) - 1):
                on_step(i)
        return result

    # The single-step protocol (parity checks, debugging): two scratch slots, eager enqueue.

    @property
    def single_step(self) -> SingleStep:
        if self._single_step is None:
            self._single_step = SingleStep(self.plan, self.engines, self.stream)
        return self._single_step

    def to_native(self, x: np.ndarray) -> DeviceLatent:
        return self.single_step.to_native(x)

    def to_numpy(self, x: DeviceLatent) -> np.ndarray:
        return self.single_step.to_numpy(x)

    def step(self, state: Prepared, x: DeviceLatent, sigma: float, sigma_next: float) -> DeviceLatent:
        self.stream.synchronize()  # sync: the previous step's staging (sigmas, inputs) is reused
        self._make_resident(state)
        return self.single_step.step(x, sigma, sigma_next)

    def decode(self, latent: np.ndarray, chunk: int) -> np.ndarray:
        """Decode in the engine's chunk size (fixed at export; `chunk` is ignored)."""
        return self.decoder.decode(latent)


class TensorRTRTXBackend(TensorRTBackend):
    """TensorRT-RTX: engines compiled ahead of time, kernels JIT-compiled on this GPU at the
    first run and kept in a runtime cache file beside the engines (saved by `warmup` and `close`)."""

    name = "tensorrt-rtx"
    engine_set = RTXEngines

    @property
    def runtime_cache_path(self) -> Path:
        return self.engines.runtime_cache_path

    def describe(self) -> dict:
        return {**super().describe(), "runtime_cache": str(self.runtime_cache_path)}

"""`ort` (alias onnxruntime): the five exported graphs under ONNX Runtime, no torch.

Stages of the backend protocol map one to one onto the graphs of `sv3d-trt export`
(export/graphs.py): encode = clip + vae_encoder, prepare = context (once per generation, its
32 folded cross-attention outputs are fed by name into every step), step = one denoise_step
run, decode = vae_decoder over fixed-size chunks (the exported chunk; the last one padded).

One InferenceSession per graph, created once. How the denoise step is fed is the one thing
that depends on the execution provider, and lives in one of two small classes: `HostFeeds`
(CPU provider: plain `run` with numpy, already copy-free) and `DeviceFeeds` (CUDA provider:
the latent, the per-generation feeds and the context outputs stay on the GPU through IO
binding, the step's output written into one of two preallocated device buffers in turn).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..contract.backends import INFO
from ..contract.graphs import GRAPH_NAMES
from ..contract.manifest import EXPORT_INFO, read_export_info
from ..errors import BackendUnavailableError, StaleEngineError
from ..models.config import get_config
from .backend import Backend, Conditioning, chunk_ranges, pad_chunk

log = logging.getLogger(__name__)



def _import_ort():
    try:
        import onnxruntime
    except ImportError as e:
        raise BackendUnavailableError(
            f"the ort backend needs ONNX Runtime ({e}); install with `{INFO['ort'].install}`"
        ) from e
    return onnxruntime


def check_session_io(name: str, session, contract: dict, directory: Path) -> None:
    """The session's IO must equal the contract recorded in export.json (names, shapes)."""
    got = {
        "inputs": [(v.name, list(v.shape)) for v in session.get_inputs()],
        "outputs": [(v.name, list(v.shape)) for v in session.get_outputs()],
    }
    want = {k: [(t["name"], list(t["shape"])) for t in contract[k]] for k in ("inputs", "outputs")}
    if got != want:
        raise StaleEngineError(
            f"{directory / (name + '.onnx')} does not match {directory / EXPORT_INFO} "
            f"(graph {got}, export.json {want}); re-run `sv3d-trt export`"
        )


def choose_providers(device: str, available: list[str]) -> list[str]:
    """Execution providers for `device` ("auto", "cpu", "cuda", "cuda:N") out of `available`."""
    kind = device.split(":")[0]
    if kind not in ("auto", "cpu", "cuda"):
        raise BackendUnavailableError(f"the ort backend runs on cpu or cuda, not {device!r}")
    if kind == "cuda" and "CUDAExecutionProvider" not in available:
        raise BackendUnavailableError(
            f"ONNX Runtime here has no CUDA execution provider (available: {', '.join(available)}); "
            "install `pip install onnxruntime-gpu` or use --device cpu"
        )
    if kind != "cpu" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OrtBackend(Backend):
    name = "ort"

    def __init__(self, directory: str | Path, device: str = "auto", threads: int | None = None):
        ort = _import_ort()
        self.directory = Path(directory)
        self.info = read_export_info(self.directory, require_graphs=GRAPH_NAMES)
        super().__init__(get_config(self.info["config"], self.info["variant"]))
        self.decode_chunk = int(self.info["decode_chunk"])
        self.providers = choose_providers(device, ort.get_available_providers())
        self.cuda = self.providers[0] == "CUDAExecutionProvider"
        self.device_id = int(device.split(":")[1]) if ":" in device else 0
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # warnings from constant folding are noise here
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        provider_options = [{"device_id": self.device_id}, {}] if self.cuda else [{}]
        self.sessions = {}
        for name in GRAPH_NAMES:
            path = self.directory / self.info["graphs"][name]["file"]
            if not path.is_file():
                raise StaleEngineError(f"{path} is missing; re-run `sv3d-trt export --out {self.directory}`")
            session = ort.InferenceSession(str(path), sess_options=options, providers=self.providers,
                                           provider_options=provider_options)
            check_session_io(name, session, self.info["graphs"][name], self.directory)
            self.sessions[name] = session
        self._ort = ort
        self.feeds = DeviceFeeds(ort, self.sessions, self.device_id) if self.cuda else HostFeeds(self.sessions)

    @property
    def device(self) -> str:
        return f"cuda:{self.device_id}" if self.cuda else "cpu"

    @property
    def noise_device(self) -> str:
        return "cpu"  # ONNX Runtime takes host arrays: the noise comes from torch's CPU generator

    def close(self) -> None:
        """Release the sessions (and their CUDA arenas) and the step's output buffers."""
        self.feeds.close()
        self.sessions.clear()

    @classmethod
    def from_artifacts(cls, path, device: str = "auto", threads: int | None = None, **_) -> "OrtBackend":
        return cls(path, device=device, threads=threads)

    def describe(self) -> dict:
        return {
            "backend": self.name,
            "onnxruntime": self._ort.__version__,
            "providers": self.providers,
            "export_dir": str(self.directory.resolve()),
            "precision": self.info["precision"],
            "config": self.info["config"],
            "variant": self.info["variant"],
            "decode_chunk": self.decode_chunk,
        }

    # -- stages -------------------------------------------------------------------------

    def to_native(self, x: np.ndarray) -> Any:
        return self.feeds.to_native(x)

    def to_numpy(self, x: Any) -> np.ndarray:
        return self.feeds.to_numpy(x)

    def encode(self, image: np.ndarray, noised_image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        (clip,) = run_session(self.sessions["clip"], {"image": image})  # (1, D)
        (latent,) = run_session(self.sessions["vae_encoder"], {"image": noised_image})  # (1, 4, h, w)
        return clip, latent

    def prepare(self, cond: Conditioning, vector: np.ndarray, cfg_scales: np.ndarray) -> dict[str, Any]:
        """The per-generation inputs of denoise_step, the context graph's attn2_i (2, C_i) included."""
        feeds = {
            "concat_latent": np.asarray(cond.concat_latent, dtype=np.float32),  # (1, 4, h, w)
            "vector": np.asarray(vector, dtype=np.float32),  # (T, adm)
            "cfg_scales": np.asarray(cfg_scales, dtype=np.float32),  # (T,)
        }
        return self.feeds.prepare(cond.clip_embedding, feeds)

    def step(self, state: dict[str, Any], x: Any, sigma: float, sigma_next: float) -> Any:
        sigmas = {"sigma": np.array([sigma], np.float32), "sigma_next": np.array([sigma_next], np.float32)}
        return self.feeds.step(state, x, sigmas)  # (T, 4, h, w)

    def decode(self, latent: np.ndarray, chunk: int) -> np.ndarray:
        """Decode in the exported chunk size (a fixed graph shape); `chunk` is ignored here:
        a smaller decode chunk needs a re-export (`sv3d-trt export --decode-chunk N`)."""
        latent = np.asarray(latent, dtype=np.float32)  # (T, 4, h, w)
        frames = []
        decoder = self.sessions["vae_decoder"]
        for start, stop in chunk_ranges(len(latent), self.decode_chunk):
            (out,) = run_session(decoder, {"latent": pad_chunk(latent[start:stop], self.decode_chunk)})
            frames.append(out[: stop - start])  # (n, 3, S, S)
        return np.concatenate(frames)


def run_session(session, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return session.run(None, {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feeds.items()})


class HostFeeds:
    """CPU provider: every array is numpy, every graph a plain `run`."""

    def __init__(self, sessions: dict):
        self.sessions = sessions

    def to_native(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x, dtype=np.float32)

    def to_numpy(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float32)

    def prepare(self, clip_embedding: np.ndarray, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        context = self.sessions["context"]
        outputs = run_session(context, {"clip_embedding": clip_embedding})
        return {**feeds, **dict(zip((o.name for o in context.get_outputs()), outputs))}

    def step(self, state: dict, x: np.ndarray, sigmas: dict[str, np.ndarray]) -> np.ndarray:
        (x_next,) = self.sessions["denoise_step"].run(None, {"x": x, **sigmas, **state})
        return x_next

    def close(self) -> None:
        pass


class DeviceFeeds:
    """CUDA provider: OrtValues on the GPU, bound to the sessions (IO binding); the step writes
    into one of two preallocated device buffers in turn, so no output is allocated per step."""

    def __init__(self, ort, sessions: dict, device_id: int):
        self.ort, self.sessions, self.device_id = ort, sessions, device_id
        self._ping_pong: list[Any] = []  # two device buffers for x_next, made at the first step

    def to_native(self, x: np.ndarray) -> Any:
        return self.ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(x, dtype=np.float32), "cuda", self.device_id)

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.numpy()

    def prepare(self, clip_embedding: np.ndarray, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
        """The context outputs never leave the device; they are bound as step inputs."""
        context = self.sessions["context"]
        binding = context.io_binding()
        binding.bind_cpu_input("clip_embedding", np.ascontiguousarray(clip_embedding, dtype=np.float32))
        for out in context.get_outputs():
            binding.bind_output(out.name, "cuda", self.device_id)
        context.run_with_iobinding(binding)
        device_feeds = {k: self.to_native(v) for k, v in feeds.items()}
        device_feeds.update(zip((o.name for o in context.get_outputs()), binding.get_outputs()))
        return device_feeds

    def step(self, state: dict, x: Any, sigmas: dict[str, np.ndarray]) -> Any:
        session = self.sessions["denoise_step"]
        if not self._ping_pong:
            shape = tuple(session.get_outputs()[0].shape)
            self._ping_pong = [self.ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, "cuda", self.device_id)
                               for _ in range(2)]
        out = self._ping_pong[0] if x is not self._ping_pong[0] else self._ping_pong[1]
        binding = session.io_binding()
        binding.bind_ortvalue_input("x", x)
        for name, value in sigmas.items():
            binding.bind_cpu_input(name, value)
        for name, value in state.items():
            binding.bind_ortvalue_input(name, value)
        binding.bind_ortvalue_output("x_next", out)
        session.run_with_iobinding(binding)
        return out

    def close(self) -> None:
        self._ping_pong.clear()

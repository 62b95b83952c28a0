"""`sv3d-trt bench`: every backend, stage by stage, in one process, against the FLOP floor.

Backends are driven through the protocol of runtime/backend.py only, so whatever REGISTRY
holds is benchmarked the same way, on the same inputs, one after the other (one process: the
ratios between rows are not blurred by another process's clocks, boosts or page cache):

    encode        backend.encode(image, noised_image)         (CLIP + VAE encoder)
    prepare       backend.prepare(cond, vector, cfg_scales)   (batched CFG state / context fold)
    step          backend.step(state, x, sigma, sigma_next)   one CFG Euler step, 2T frames
    denoise       backend.denoise(state, x0, sigmas)          the whole `steps`-step loop
    decode_<n>    backend.decode(latent, n)                   all T frames, n per decoder call
    end_to_end    Pipeline.generate(image)                    preprocess .. uint8 frames

With mesh=True, mesh reconstruction (mesh.reconstruct_mesh) is timed once, after the backends,
on the end-to-end frames of the first backend that ran: it does not depend on the backend.

Stages called once per request are timed `iters` times after `warmup` calls, rotating through
`rotate` distinct input buffers; the loop, which costs `steps` UNet calls, `loop_iters` times
after one warm-up loop if warmup > 0 (a CUDA-graph backend captures there); end to end
`loop_iters` times with no warm-up of its own (every stage is warm by then). CLIP and the VAE
encoder are timed together as `encode`: the protocol has one method for both (their FLOPs are
counted apart).
A backend that cannot run here (BackendUnavailableError) is reported as skipped with the
reason; one that fails with another typed error mid-run, as failed with the message.
"""
from __future__ import annotations

import datetime
import gc
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..contract.backends import ENGINE_BACKENDS, ONNX_BACKENDS, canonical_backend
from ..cameras import COND_AUG, camera_vector, resolve_orbit
from ..errors import BackendUnavailableError, SV3DError
from ..models.checkpoint import inspect_checkpoint
from ..models.config import SV3DConfig
from ..runtime.backend import Backend, Conditioning, backend_class
from ..runtime.pipeline import Pipeline
from ..sampler import edm_sigmas, initial_noise_scale, triangle_cfg_scales
from .artifacts import describe_artifacts
from .flops import reference_flops
from .machine import Peaks, describe_machine, measure_peaks
from .memory import MemoryMonitor
from .timing import Stats, clock_for, measure

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class BenchSpec:
    """What to benchmark and how long."""

    checkpoint: Path
    backends: tuple[str, ...] = ("torch-eager",)
    device: str = "cpu"
    dtype: str = "fp32"
    steps: int = 50
    warmup: int = 3
    iters: int = 10
    loop_iters: int = 3
    decode_chunks: tuple[int, ...] = (1, 7, 14)
    onnx_dir: Path | None = None
    engines_dir: Path | None = None
    # Where a missing ONNX export / engine directory is made from the checkpoint (None: an
    # ort/tensorrt row without --onnx/--engines is skipped).
    workdir: Path | None = None
    mesh: bool = False
    mesh_iters: int | None = None  # optimisation steps of the mesh fit (None: its default)
    seed: int = 0
    rotate: int = 3  # distinct input buffers per stage

    def __post_init__(self):
        for name in ("checkpoint", "onnx_dir", "engines_dir", "workdir"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))
        object.__setattr__(self, "backends", tuple(dict.fromkeys(canonical_backend(b) for b in self.backends)))
        if self.iters < 1 or self.loop_iters < 1 or self.warmup < 0 or self.rotate < 1:
            raise ValueError("iters, loop_iters and rotate must be >= 1 and warmup >= 0")

    @property
    def e2e_chunk(self) -> int:
        """Decode chunk of the end-to-end run: the largest benchmarked (14 = the reference's)."""
        return max(self.decode_chunks)


def default_dtype(device: str) -> str:
    """The reference recipe's UNet dtype: fp16 on a GPU, fp32 on a CPU (no fast fp16 there)."""
    return "fp16" if device.startswith("cuda") else "fp32"


@dataclass
class BackendResult:
    name: str
    status: str  # "ok" | "skipped" | "failed"
    reason: str = ""
    settings: dict = field(default_factory=dict)
    timing_method: str = ""
    load_seconds: float | None = None
    stages: dict[str, Stats] = field(default_factory=dict)
    memory: dict = field(default_factory=dict)
    artifacts: dict | None = None


@dataclass
class BenchResult:
    spec: BenchSpec
    config: SV3DConfig
    created: str
    machine: dict
    peaks: Peaks
    flops: dict[str, int]
    backends: list[BackendResult]
    mesh: dict | None = None


@dataclass
class _Inputs:
    """The same random inputs for every backend (seeded), `rotate` buffers per stage."""

    images: list[np.ndarray]  # (1, 3, S, S) in [-1, 1]
    noised_images: list[np.ndarray]  # (1, 3, S, S): images + cond_aug noise, the VAE encoder's input
    vector: np.ndarray  # (T, adm)
    cfg_scales: np.ndarray  # (T,)
    sigmas: np.ndarray  # (steps + 1,)
    step_x: list[np.ndarray]  # (T, 4, h, w) at the mid-schedule noise level
    loop_x0: list[np.ndarray]  # (T, 4, h, w) initial latents, noise * sqrt(1 + sigma_0^2)
    decode_z: list[np.ndarray]  # (T, 4, h, w), already divided by the VAE scale

    @classmethod
    def make(cls, config: SV3DConfig, spec: BenchSpec) -> "_Inputs":
        rng = np.random.default_rng(spec.seed)
        T, S, h, z = config.num_frames, config.image_size, config.latent_size, config.vae.z_channels

        def normal(shape, scale=1.0):
            return [(scale * rng.standard_normal(shape)).astype(np.float32) for _ in range(spec.rotate)]

        sigmas = edm_sigmas(spec.steps)
        orbit = resolve_orbit(config.variant, None, num_frames=T, seed=spec.seed)
        images = [rng.uniform(-1, 1, (1, 3, S, S)).astype(np.float32) for _ in range(spec.rotate)]
        return cls(
            images=images,
            noised_images=[im + noise for im, noise in zip(images, normal((1, 3, S, S), COND_AUG))],
            vector=camera_vector(config.variant, orbit, num_frames=T, cond_aug=COND_AUG).astype(np.float32),
            cfg_scales=triangle_cfg_scales(T).astype(np.float32),
            sigmas=sigmas,
            step_x=normal((T, z, h, h), initial_noise_scale(sigmas[len(sigmas) // 2])),
            loop_x0=normal((T, z, h, h), initial_noise_scale(sigmas[0])),
            decode_z=normal((T, z, h, h), 1.0 / config.vae.scale_factor),
        )

    def step_sigmas(self) -> tuple[float, float]:
        i = len(self.sigmas) // 2
        return float(self.sigmas[i]), float(self.sigmas[i + 1])


class Artifacts:
    """The ONNX export and engine directories of a run: given, or made once in `spec.workdir`."""

    def __init__(self, spec: BenchSpec):
        self.spec = spec
        self._onnx_dir = spec.onnx_dir
        self._engines: dict[str, Path] = {}

    def _missing(self, flag: str, name: str) -> BackendUnavailableError:
        return BackendUnavailableError(f"backend {name!r} needs {flag} DIR (from `sv3d-trt export`/`build`)")

    def onnx_dir(self, name: str) -> Path:
        if self._onnx_dir is None:
            if self.spec.workdir is None:
                raise self._missing("--onnx", name)
            from ..export.onnx_export import export_checkpoint

            log.info("exporting %s to ONNX (%s)", self.spec.checkpoint.name, self.spec.dtype)
            chunk = min(self.spec.e2e_chunk, inspect_checkpoint(self.spec.checkpoint).num_frames)
            out = self.spec.workdir / "onnx"
            export_checkpoint(self.spec.checkpoint, out, precision=self.spec.dtype, decode_chunk=chunk)
            self._onnx_dir = out
        return self._onnx_dir

    def engines_dir(self, name: str) -> Path:
        if self.spec.engines_dir is not None:
            return self.spec.engines_dir
        if name not in self._engines:
            if self.spec.workdir is None:
                raise self._missing("--engines", name)
            from ..export.build import build_engines

            onnx_dir = self.onnx_dir(name)
            out = self.spec.workdir / f"engines-{name}"
            log.info("building %s engines", name)
            build_engines(onnx_dir, out, backend=name)
            self._engines[name] = out
        return self._engines[name]

    def directory(self, name: str) -> Path | None:
        """The artifact directory backend `name` reads (None for checkpoint backends)."""
        if name in ONNX_BACKENDS:
            return self.onnx_dir(name)
        if name in ENGINE_BACKENDS:
            return self.engines_dir(name)
        return None


def make_backend(name: str, spec: BenchSpec, directory: Path | None) -> Backend:
    """Construct backend `name` from its artifact directory, or from the checkpoint.
    Raises BackendUnavailableError when it cannot run here."""
    from ..runtime.artifacts import require_installed

    require_installed(name)
    cls = backend_class(name)
    if directory is None:
        return cls.from_checkpoint(spec.checkpoint, device=spec.device, dtype=spec.dtype)
    return cls.from_artifacts(directory, device=spec.device)


def _stages(backend: Backend, spec: BenchSpec, inputs: _Inputs, image: Path) -> tuple[dict[str, Stats], Any]:
    """Time every stage; returns the stats and the last end-to-end Result (frames, cameras)."""
    clock = clock_for(backend)
    n = spec.rotate
    stages: dict[str, Stats] = {}

    def timed(stage: str, fn: Callable[[int], Any], warmup: int, iters: int) -> None:
        log.info("%s: %s (%d warm-up, %d measured)", backend.name, stage, warmup, iters)
        stages[stage] = measure(fn, clock, warmup, iters)

    timed("encode", lambda i: backend.encode(inputs.images[i % n], inputs.noised_images[i % n]), spec.warmup,
          spec.iters)
    clip, latent = backend.encode(inputs.images[0], inputs.noised_images[0])
    rgb = ((inputs.images[0][0].transpose(1, 2, 0) + 1) * 127.5).astype(np.uint8)  # (S, S, 3)
    cond = Conditioning(clip_embedding=clip, concat_latent=latent, input_rgb=rgb)
    timed("prepare", lambda i: backend.prepare(cond, inputs.vector, inputs.cfg_scales), spec.warmup, spec.iters)
    state = backend.prepare(cond, inputs.vector, inputs.cfg_scales)
    xs = [backend.to_native(x) for x in inputs.step_x]
    sigma, sigma_next = inputs.step_sigmas()
    if clock.synchronizes:
        timed("step", lambda i: backend.step(state, xs[i % n], sigma, sigma_next), spec.warmup, spec.iters)
    else:  # the backend offers no sync: fetching x_next (T*4*h*w floats) is the only completion point
        timed("step", lambda i: backend.to_numpy(backend.step(state, xs[i % n], sigma, sigma_next)), spec.warmup,
              spec.iters)
    # Exported decoders have a fixed batch: they decode in that chunk whatever is asked.
    fixed = backend.describe().get("decode_chunk")
    for chunk in (fixed,) if fixed else spec.decode_chunks:
        timed(f"decode_{chunk}", lambda i, c=chunk: backend.decode(inputs.decode_z[i % n], c), spec.warmup, spec.iters)
    loop_warmup = min(spec.warmup, 1)
    timed("denoise", lambda i: backend.denoise(state, inputs.loop_x0[i % n], inputs.sigmas), loop_warmup,
          spec.loop_iters)
    # End to end through the public API, as a user runs it: preprocess, encode, prepare, loop,
    # decode, uint8 frames. Every stage is warm by now, so no extra warm-up run.
    pipe = Pipeline(backend)
    results = []

    def generate(i: int) -> None:
        results[:] = [pipe.generate(image, seed=spec.seed + i, steps=spec.steps, decode_chunk=spec.e2e_chunk)]

    timed("end_to_end", generate, 0, spec.loop_iters)
    return stages, results[0]


def time_mesh(frames_from: str, generated, spec: BenchSpec) -> dict:
    """Reconstruct a mesh from generated frames once: total and per-stage seconds."""
    import tempfile

    from ..mesh import reconstruct_mesh

    with tempfile.TemporaryDirectory(prefix="sv3d-bench-mesh-") as tmp:
        t0 = time.perf_counter()
        mesh = reconstruct_mesh(generated.frames, generated.cameras, Path(tmp) / "mesh.glb", iters=spec.mesh_iters,
                                device=spec.device)
        total = time.perf_counter() - t0
    return {"frames_from": frames_from, "device": spec.device, "faces": int(len(mesh.faces)), "iters": spec.mesh_iters,
            "seconds": {**mesh.seconds, "total": total}}


def _free_memory() -> None:
    """Return a dropped backend's memory before the next one loads (one process runs them all)."""
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def run_backend(name: str, spec: BenchSpec, artifacts: Artifacts, inputs: _Inputs,
                image: Path) -> tuple[BackendResult, Any]:
    """Benchmark one backend -> (its result, its last generated orbit or None). A backend that
    cannot run (BackendUnavailableError) or fails with another typed error gives a
    skipped/failed result instead of raising."""
    monitor = MemoryMonitor(use_gpu=spec.device.startswith("cuda"))
    backend = generated = None
    try:
        if name in ENGINE_BACKENDS and not spec.device.startswith("cuda"):
            raise BackendUnavailableError(f"backend {name!r} runs on a CUDA device only; use --device cuda")
        directory = artifacts.directory(name)  # exports/builds first: not part of load or memory
        monitor.start()
        t0 = time.perf_counter()
        backend = make_backend(name, spec, directory)
        clock = clock_for(backend)
        method = clock.method if clock.synchronizes else f"{clock.method}, step includes fetching x_next"
        result = BackendResult(name=name, status="ok", settings=backend.describe(), timing_method=method,
                               load_seconds=time.perf_counter() - t0)
        result.stages, generated = _stages(backend, spec, inputs, image)
        result.memory = monitor.stop()
        if directory is not None:
            result.artifacts = describe_artifacts(directory)
    except BackendUnavailableError as e:
        log.info("%s skipped: %s", name, e)
        result = BackendResult(name=name, status="skipped", reason=str(e))
    except SV3DError as e:
        log.info("%s failed: %s", name, e)
        result = BackendResult(name=name, status="failed", reason=f"{type(e).__name__}: {e}")
    finally:
        monitor.close()
        if backend is not None:
            backend.close()  # frees its device memory; TensorRT-RTX persists its runtime cache
    backend = None
    _free_memory()
    return result, generated


def run_bench(spec: BenchSpec, on_backend: Callable[[BackendResult], None] | None = None) -> BenchResult:
    """Measure the device's peaks, count the stage FLOPs, then benchmark every backend in turn."""
    from ..preprocess import example_image_path

    config = inspect_checkpoint(spec.checkpoint)
    created = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    machine = describe_machine(spec.device)
    peaks = measure_peaks(spec.device, spec.dtype)
    flops = reference_flops(config, spec.steps)
    inputs = _Inputs.make(config, spec)
    image = example_image_path("mug")
    artifacts = Artifacts(spec)
    results = []
    mesh_input = None  # (backend name, generated orbit) for the mesh stage
    for name in spec.backends:
        result, generated = run_backend(name, spec, artifacts, inputs, image)
        results.append(result)
        if mesh_input is None and generated is not None:
            mesh_input = (name, generated)
        if on_backend is not None:
            on_backend(result)
    mesh = time_mesh(*mesh_input, spec) if spec.mesh and mesh_input is not None else None
    return BenchResult(spec=spec, config=config, created=created, machine=machine, peaks=peaks, flops=flops,
                       backends=results, mesh=mesh)

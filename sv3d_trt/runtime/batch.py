"""Run one pipeline over many images: `sv3d-trt run IMAGE... --out DIR`.

Each image gets OUT/<stem>/ with the layout of `sv3d-trt generate` (frames, orbit.mp4,
orbit.gif, cameras.json, input.png) plus run.json (settings, versions, backend, noise source,
timings) and optionally mesh.glb. An image's directory is assembled in a hidden staging
directory beside it and renamed into place when complete, so a crash or a failure never
leaves half an image's outputs, and a later image failing never touches earlier ones. Errors
are collected per image; the caller decides the exit status.
"""
from __future__ import annotations

import logging
import os
import platform
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .. import __version__
from ..errors import NumericsError, SV3DError
from ..fileio import write_json_atomic
from .pipeline import Pipeline, Result

log = logging.getLogger(__name__)

RUN_INFO = "run.json"


@dataclass(frozen=True)
class RunSettings:
    seed: int = 23
    steps: int = 50
    orbit: str | None = None  # static | dynamic | FILE.json (sv3d_p)
    elevation: float | None = None
    decode_chunk: int = 14
    mesh: bool = False
    fps: int = 10


@dataclass
class ImageOutcome:
    image: str
    out_dir: Path
    ok: bool
    error: str = ""
    timings: dict = field(default_factory=dict)
    fallback: str = ""  # why the fp32 fallback ran, if it did


def output_names(images: list[str | Path]) -> list[str]:
    """One directory name per image: its stem, made unique with -2, -3, ... on collisions."""
    names, seen = [], {}
    for image in images:
        stem = Path(image).stem or "image"
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return names


def is_out_of_memory(exc: BaseException) -> bool:
    """Out-of-memory from any backend: MemoryError, torch.OutOfMemoryError, ONNX Runtime's
    'Failed to allocate memory', CUDA's 'out of memory'."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return "out of memory" in text or "failed to allocate memory" in text


def failure_message(exc: BaseException, backend: str) -> str:
    """One line for the failure list; out-of-memory gets the knob that lowers peak memory."""
    if is_out_of_memory(exc):
        if backend.startswith("torch"):
            hint = "lower --decode-chunk (e.g. --decode-chunk 3)"
        else:  # fixed-shape graphs decode in the exported chunk
            hint = ("re-export with a smaller decoder chunk (`sv3d-trt export --decode-chunk 3`) "
                    "and rebuild, or use --decode-chunk with a --checkpoint run")
        return f"out of memory ({str(exc).strip().splitlines()[0][:200]}); {hint}"
    if isinstance(exc, SV3DError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def versions() -> dict:
    return {"sv3d_trt": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "platform": platform.platform()}


def _publish(staging: Path, dest: Path) -> None:
    """Move a complete staging directory onto `dest`, replacing an older result."""
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes 0700; give the usual mode
    old = None
    if dest.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
        dest.replace(old / dest.name)
    staging.replace(dest)
    if old is not None:
        shutil.rmtree(old)


def _write_mesh(result: Result, out_dir: Path, device: str) -> None:
    """mesh.glb (+ mesh_contact.png) from the frames and cameras just generated."""
    from ..mesh.pipeline import reconstruct_mesh  # needs torch; only --mesh pays for it

    reconstruct_mesh(result.frames, result.cameras, out_dir / "mesh.glb", device=device)


class BatchRunner:
    """Generates and writes each image in turn. `fallback` builds a pipeline (e.g. over an fp32
    export) for images whose latent turned non-finite; it is built on first need only."""

    def __init__(self, pipeline: Pipeline, settings: RunSettings,
                 fallback: Callable[[], Pipeline] | None = None):
        self.pipeline = pipeline
        self.settings = settings
        self._fallback_factory = fallback
        self._fallback: Pipeline | None = None

    def _generate(self, pipeline: Pipeline, image, on_step) -> Result:
        s = self.settings
        return pipeline.generate(image, orbit=s.orbit, elevation=s.elevation, seed=s.seed, steps=s.steps,
                                 decode_chunk=s.decode_chunk, on_step=on_step)

    def run_one(self, image: str | Path, out_dir: Path, on_step: Callable[[int], None] | None = None) -> ImageOutcome:
        outcome = ImageOutcome(image=str(image), out_dir=out_dir, ok=False)
        pipeline = self.pipeline
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
        try:
            try:
                result = self._generate(pipeline, image, on_step)
            except NumericsError as e:
                if self._fallback_factory is None:
                    raise
                outcome.fallback = str(e)
                log.warning("%s: %s; re-running with the fp32 fallback", image, e)
                if self._fallback is None:
                    self._fallback = self._fallback_factory()
                pipeline = self._fallback
                result = self._generate(pipeline, image, on_step)
            timings = dict(result.timings)
            t0 = time.perf_counter()
            result.save(staging, fps=self.settings.fps)
            timings["save"] = time.perf_counter() - t0
            if self.settings.mesh:
                t0 = time.perf_counter()
                device = str(getattr(pipeline.backend, "device", "cpu"))  # the GPU of the run, if any
                _write_mesh(result, staging, device if device.startswith("cuda") else "cpu")
                timings["mesh"] = time.perf_counter() - t0
            outcome.timings = {k: round(v, 4) for k, v in timings.items()}
            write_json_atomic(staging / RUN_INFO, {
                "image": str(Path(image).resolve()),
                "settings": asdict(self.settings),
                "variant": pipeline.variant,
                "backend": pipeline.backend.describe(),
                "noise_source": result.noise_source,
                "fp32_fallback": outcome.fallback or None,
                "versions": versions(),
                "timings_s": outcome.timings,
            })
            _publish(staging, out_dir)
            outcome.ok = True
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - one image's failure must not end the batch
            outcome.error = failure_message(e, pipeline.backend.name)
            if not isinstance(e, SV3DError):
                log.exception("%s failed", image)
        finally:
            if staging.exists():
                shutil.rmtree(staging)
        return outcome

    def run(self, images: list[str | Path], out: str | Path,
            on_step: Callable[[int, int], None] | None = None,
            on_done: Callable[[ImageOutcome], None] | None = None) -> list[ImageOutcome]:
        """Generate every image into `out/<name>/`. on_step(image index, step), on_done(outcome)."""
        outcomes = []
        for index, (image, name) in enumerate(zip(images, output_names(images))):
            step = (lambda i, index=index: on_step(index, i)) if on_step is not None else None
            outcome = self.run_one(image, Path(out) / name, on_step=step)
            outcomes.append(outcome)
            if on_done is not None:
                on_done(outcome)
        return outcomes

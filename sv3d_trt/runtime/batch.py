"""Run one pipeline over many images: `sv3d-trt run IMAGE... --out DIR`.

Each image gets OUT/<stem>/ (the stem made safe: output_folder.safe_name) with the layout of
`sv3d-trt generate` (frames, orbit.mp4, orbit.gif, cameras.json, input.png, run.json: settings,
input hashes, versions, backend, noise source, timings) and optionally mesh.glb. A folder is
assembled in a hidden staging folder and renamed into place when complete, under a lock
(output_folder.staged_folder), so a crash or a failure never leaves half an image's outputs,
and a later image failing never touches earlier ones. Errors are collected per image; the
caller decides the exit status. `generate` writes its one folder with `BatchRunner.write`.
"""
from __future__ import annotations

import logging
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .. import __version__
from ..contract.manifest import sha256_file
from ..errors import NumericsError, SV3DError
from ..fileio import write_json_atomic
from ..output_folder import staged_folder, unique_names
from ..viewer import write_page
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
    mask: str | None = None  # generate only: one mask for its one image
    rembg: bool = False


@dataclass
class ImageOutcome:
    image: str
    out_dir: Path
    ok: bool
    error: str = ""
    timings: dict = field(default_factory=dict)
    fallback: str = ""  # why the fp32 fallback ran, if it did


def output_names(images: list[str | Path]) -> list[str]:
    """One folder name per image: its stem, made safe and unique with -2, -3, ... on collisions."""
    return unique_names([Path(image).stem for image in images])


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


def input_record(image, settings: RunSettings, source: str | Path | None) -> dict:
    """What run.json says the result was made from: files by path and sha256 (the model source,
    possibly gigabytes, by path and size only)."""
    files = {"image": image, "mask": settings.mask}
    if settings.orbit not in (None, "static", "dynamic"):
        files["orbit"] = settings.orbit
    record = {k: {"path": str(Path(v).resolve()), "sha256": sha256_file(v) if Path(v).is_file() else None}
              for k, v in files.items() if v is not None}
    if source is not None:
        record["model"] = {"path": str(Path(source).resolve()), "bytes": Path(source).stat().st_size}
    return record


def _write_mesh(result: Result, out_dir: Path, device: str) -> None:
    """mesh.glb (+ mesh_contact.png) from the frames and cameras just generated."""
    from ..mesh.pipeline import reconstruct_mesh  # needs torch; only --mesh pays for it

    reconstruct_mesh(result.frames, result.cameras, out_dir / "mesh.glb", device=device)


class BatchRunner:
    """Generates and writes each image in turn. `fallback` builds a pipeline (e.g. over an fp32
    export) for images whose latent turned non-finite; it is built on first need only."""

    def __init__(self, pipeline: Pipeline, settings: RunSettings,
                 fallback: Callable[[], Pipeline] | None = None, source: str | Path | None = None):
        self.pipeline = pipeline
        self.settings = settings
        self.source = source  # the checkpoint / export / engine folder, for run.json
        self._fallback_factory = fallback
        self._fallback: Pipeline | None = None

    def close(self) -> None:
        """Close the pipeline and the fallback, if one was built (frees engines and device memory;
        TensorRT-RTX saves its runtime cache here)."""
        self.pipeline.close()
        if self._fallback is not None:
            self._fallback.close()

    def __enter__(self) -> "BatchRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _generate(self, pipeline: Pipeline, image, on_step) -> Result:
        s = self.settings
        return pipeline.generate(image, orbit=s.orbit, elevation=s.elevation, seed=s.seed, steps=s.steps,
                                 decode_chunk=s.decode_chunk, mask=s.mask, rembg=s.rembg, on_step=on_step)

    def write(self, image: str | Path, out_dir: Path, on_step: Callable[[int], None] | None = None,
              on_save: Callable[[], None] | None = None) -> ImageOutcome:
        """Generate `image` into `out_dir` with run.json, staged and locked (staged_folder);
        raises on failure, OutputError before any work when `out_dir` cannot be written.
        on_step(step) during the denoise loop; on_save() when writing starts."""
        outcome = ImageOutcome(image=str(image), out_dir=out_dir, ok=False)
        pipeline = self.pipeline
        with staged_folder(out_dir) as staging:
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
            if on_save is not None:
                on_save()
            t0 = time.perf_counter()
            result.save(staging, fps=self.settings.fps)
            timings["save"] = time.perf_counter() - t0
            if self.settings.mesh:
                t0 = time.perf_counter()
                device = str(pipeline.backend.device)  # the GPU of the run, if any
                _write_mesh(result, staging, device if device.startswith("cuda") else "cpu")
                timings["mesh"] = time.perf_counter() - t0
            outcome.timings = {k: round(v, 4) for k, v in timings.items()}
            backend = pipeline.backend.describe()
            # An export fixes its decoder's chunk (describe() names it): record the one used.
            settings = {**asdict(self.settings), "decode_chunk": backend.get("decode_chunk", self.settings.decode_chunk)}
            write_json_atomic(staging / RUN_INFO, {
                "image": str(Path(image).resolve()),
                "inputs": input_record(image, self.settings, self.source),
                "settings": settings,
                "variant": pipeline.variant,
                "backend": backend,
                "noise_source": result.noise_source,
                "fp32_fallback": outcome.fallback or None,
                "versions": versions(),
                "timings_s": outcome.timings,
            })
            write_page(staging)  # again, now with run.json and the mesh
        outcome.ok = True
        return outcome

    def run_one(self, image: str | Path, out_dir: Path, on_step: Callable[[int], None] | None = None) -> ImageOutcome:
        """`write`, with a failure recorded in the outcome instead of raised."""
        try:
            return self.write(image, out_dir, on_step)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - one image's failure must not end the batch
            if not isinstance(e, SV3DError):
                log.exception("%s failed", image)
            return ImageOutcome(image=str(image), out_dir=out_dir, ok=False,
                                error=failure_message(e, self.pipeline.backend.name))

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

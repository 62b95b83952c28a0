"""`sv3d-trt build`: ONNX export directory -> `<graph>.engine` files + manifest.json.

Small build steps over TensorRT's Python API, each usable alone (Polygraphy's loaders):
`EngineBuilder.parse` (ONNX -> strongly typed network), `.create_config` (targets, timing
cache, progress monitor), `.serialize` (network -> plan bytes), `save_engine` (atomic write).
`build_engines` strings them together for every graph of an export.

One code path serves full TensorRT (>= 10, builds for the GPU of this machine) and
TensorRT-RTX (builds ahead of time, on a machine without a GPU, for the chosen
architectures); what only RTX has or lacks lives in `RTXEngineBuilder`. Both flavours build
strongly typed networks: precision is what the ONNX dtypes and Q/DQ nodes say, never a
builder flag (tensorrt.md).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import shutil
import signal
import threading
import time
from pathlib import Path
from types import ModuleType

from ..contract.graphs import GRAPH_NAMES
from ..contract.manifest import (
    ENGINE_SUFFIX,
    MANIFEST_NAME,
    Manifest,
    Precision,
    arch_name,
    new_manifest_data,
    read_export_info,
    sha256_file,
    source_entry,
    unsupported_precision_message,
    write_manifest,
)
from ..contract.tensorrt import backend_of, ensure_parser_library, import_tensorrt, logger_class
from ..errors import BackendUnavailableError, StaleEngineError
from ..fileio import atomic_path, write_bytes_atomic
from ..output_folder import staged_folder

log = logging.getLogger(__name__)

QUANTIZED_GRAPH = "denoise_step"  # the only graph run 50x per generation; the calibration set is its feeds
TIMING_CACHE = "timing.cache"
_WRITE_CHUNK = 1 << 28  # engines reach 3 GB: write the plan in slices, never copy it whole

# TensorRT DataType name -> numpy-style dtype name recorded in the manifest.
_DTYPE_NAMES = {
    "FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "UINT8": "uint8",
    "INT32": "int32", "INT64": "int64", "BOOL": "bool", "FP8": "float8_e4m3fn", "INT4": "int4",
}


class Cancellation:
    """One Ctrl-C cancels a build promptly. TensorRT builds in C++ and calls back into Python
    for log lines and progress, and a KeyboardInterrupt raised inside such a callback is
    swallowed there (the build went on and exited 0). So while building, SIGINT only sets
    `requested`; the progress monitor's step_complete then returns False, which makes TensorRT
    cancel, and `check` raises KeyboardInterrupt in plain Python once TensorRT has returned."""

    def __init__(self):
        self.requested = False

    @contextlib.contextmanager
    def on_sigint(self):
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            yield self
            return
        previous = signal.signal(signal.SIGINT, self._sigint)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)

    def _sigint(self, signum, frame) -> None:
        self.requested = True

    def check(self, logger=None) -> None:
        """KeyboardInterrupt if Ctrl-C was pressed (or landed in the TensorRT logger's callback)."""
        if self.requested or getattr(logger, "interrupted", False):
            raise KeyboardInterrupt


@functools.cache
def _progress_class(trt: ModuleType):
    class ProgressMonitor(trt.IProgressMonitor):
        """Feeds TensorRT's build phases into a `rich.progress.Progress` (one task per phase,
        nested phases indented; progress None: cancellation only) and cancels the build once
        Ctrl-C was pressed. Callbacks must not raise: TensorRT calls them from C++."""

        def __init__(self, progress, cancel: Cancellation):
            trt.IProgressMonitor.__init__(self)
            self._progress = progress
            self._cancel = cancel
            self._tasks: dict[str, tuple[int, int]] = {}  # phase -> (task id, depth)

        def phase_start(self, phase_name, parent_phase, num_steps):
            if self._progress is not None:
                depth = self._tasks[parent_phase][1] + 1 if parent_phase in self._tasks else 0
                task = self._progress.add_task("  " * depth + phase_name, total=num_steps)
                self._tasks[phase_name] = (task, depth)

        def step_complete(self, phase_name, step):
            if phase_name in self._tasks:
                self._progress.update(self._tasks[phase_name][0], completed=step + 1)
            return not self._cancel.requested  # False cancels the build

        def phase_finish(self, phase_name):
            if phase_name in self._tasks:
                self._progress.remove_task(self._tasks.pop(phase_name)[0])

    return ProgressMonitor


def _tensor_info(tensor) -> dict:
    return {"name": tensor.name, "shape": list(tensor.shape), "dtype": _DTYPE_NAMES.get(tensor.dtype.name, tensor.dtype.name.lower())}


def local_compute_capability() -> tuple[int, int] | None:
    """Compute capability of GPU 0 via cuda-python, or None without a driver/GPU."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return None
    attr = cudart.cudaDeviceAttr
    err, major = cudart.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMajor, 0)
    if err != cudart.cudaError_t.cudaSuccess:
        return None
    _, minor = cudart.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMinor, 0)
    return int(major), int(minor)


class EngineBuilder:
    """Full TensorRT: builds for the GPU of this machine and reuses a timing cache file."""

    def __init__(self, trt: ModuleType, progress=None, timing_cache: Path | None = None,
                 cancel: Cancellation | None = None):
        self.trt = trt
        self.progress = progress
        self.timing_cache = timing_cache
        self.cancel = cancel or Cancellation()
        self.logger = logger_class(trt)()
        self.builder = trt.Builder(self.logger)

    @property
    def backend(self) -> str:
        return backend_of(self.trt)

    @property
    def targets(self) -> list[str]:
        capability = local_compute_capability()
        if capability is None:
            raise BackendUnavailableError(
                "full TensorRT builds for the GPU of this machine and found none; "
                "on a machine without a GPU build with `--backend tensorrt-rtx --target sm89,...`"
            )
        return [arch_name(capability)]

    def known_targets(self) -> list[str]:
        return self.targets

    def _fail(self, what: str) -> BackendUnavailableError:
        errors = "\n  ".join(self.logger.errors) or "(TensorRT logged no error)"
        self.logger.errors.clear()
        return BackendUnavailableError(f"{what}; {self.backend} {self.trt.__version__} said:\n  {errors}")

    def parse(self, onnx_path: Path):
        """ONNX file (external weights beside it) -> (strongly typed network, parser).
        The parser must outlive the network: it owns the weights."""
        ensure_parser_library()
        trt = self.trt
        network = self.builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(str(onnx_path)):
            self.logger.errors += [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
            raise self._fail(f"cannot parse {onnx_path}")
        dynamic = [
            f"{t.name}{list(t.shape)}" for t in (network.get_input(i) for i in range(network.num_inputs))
            if any(d < 0 for d in t.shape)
        ]
        if dynamic:
            raise StaleEngineError(
                f"{onnx_path} has dynamic input shapes ({', '.join(dynamic)}); sv3d-trt builds "
                "fixed-shape engines: re-export with `sv3d-trt export`"
            )
        return network, parser

    def create_config(self):
        config = self.builder.create_builder_config()
        config.progress_monitor = _progress_class(self.trt)(self.progress, self.cancel)
        if self.timing_cache is not None:
            data = self.timing_cache.read_bytes() if self.timing_cache.is_file() else b""
            # ignore_mismatch=False: a cache from another GPU or version is dropped, not trusted.
            config.set_timing_cache(config.create_timing_cache(data), False)
        return config

    def serialize(self, network, config) -> memoryview:
        plan = self.builder.build_serialized_network(network, config)
        self.cancel.check(self.logger)  # a cancelled build returns None: that is no build error
        if plan is None:
            raise self._fail("TensorRT could not build the engine")
        if self.timing_cache is not None:
            write_bytes_atomic(self.timing_cache, memoryview(config.get_timing_cache().serialize()))
        return memoryview(plan)

    def build(self, onnx_path: Path) -> tuple[memoryview, dict]:
        """ONNX -> (plan bytes, {"inputs": [...], "outputs": [...]})."""
        network, _parser = self.parse(onnx_path)
        io = {
            "inputs": [_tensor_info(network.get_input(i)) for i in range(network.num_inputs)],
            "outputs": [_tensor_info(network.get_output(i)) for i in range(network.num_outputs)],
        }
        return self.serialize(network, self.create_config()), io


class RTXEngineBuilder(EngineBuilder):
    """TensorRT-RTX: ahead-of-time builds for chosen architectures, no GPU needed.

    Its timing-cache calls are no-ops (deprecated since TensorRT-RTX 1.2; kernels are tuned
    on the target GPU at first run), so no cache file is written.
    """

    # No target set builds a portable engine; measured on TensorRT-RTX 1.7.1 it loads on these.
    PORTABLE = ["sm80", "sm86", "sm89", "sm120", "sm121"]

    def __init__(self, trt: ModuleType, targets: list[str] | None = None, progress=None,
                 cancel: Cancellation | None = None):
        super().__init__(trt, progress=progress, timing_cache=None, cancel=cancel)
        self._targets = [arch_name(t) for t in targets] if targets else []
        known = self.known_targets()
        for arch in self._targets:
            if arch not in known:
                hint = "; Hopper (sm90) needs full TensorRT (--backend tensorrt)" if arch == "sm90" else ""
                raise BackendUnavailableError(
                    f"TensorRT-RTX {trt.__version__} cannot target {arch} "
                    f"(targets: {', '.join(known)}){hint}"
                )

    def known_targets(self) -> list[str]:
        return [m.lower() for m in self.trt.ComputeCapability.__members__ if m.startswith("SM")]

    @property
    def targets(self) -> list[str]:
        return list(self._targets) or list(self.PORTABLE)

    def create_config(self):
        config = super().create_config()
        if self._targets:
            config.num_compute_capabilities = len(self._targets)
            for i, arch in enumerate(self._targets):
                config.set_compute_capability(getattr(self.trt.ComputeCapability, arch.upper()), i)
        return config


def make_builder(trt: ModuleType, targets: list[str] | None, out_dir: Path, progress=None,
                 cancel: Cancellation | None = None) -> EngineBuilder:
    """The builder for this TensorRT flavour: RTX for chosen targets, full TensorRT for this GPU."""
    if backend_of(trt) == "tensorrt-rtx":
        return RTXEngineBuilder(trt, targets=targets, progress=progress, cancel=cancel)
    builder = EngineBuilder(trt, progress=progress, timing_cache=out_dir / TIMING_CACHE, cancel=cancel)
    if targets and [arch_name(t) for t in targets] != builder.targets:
        raise BackendUnavailableError(
            f"full TensorRT builds for this machine's GPU ({builder.targets[0]}), not for "
            f"{', '.join(targets)}; cross-architecture builds need --backend tensorrt-rtx"
        )
    return builder


def _write_chunks(f, plan: memoryview) -> None:
    for start in range(0, plan.nbytes, _WRITE_CHUNK):
        f.write(plan[start:start + _WRITE_CHUNK])


def save_engine(plan: memoryview, path: Path) -> None:
    """Atomic: an interrupted write leaves the previous file (or none), never half an engine."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        _write_chunks(f, plan)


def graphs_to_build(onnx_dir: Path, export_info: dict) -> list[str]:
    """Graph names in build order: those export.json lists, else the known ones present."""
    names = list(export_info.get("graphs") or [g for g in GRAPH_NAMES if (onnx_dir / f"{g}.onnx").is_file()])
    missing = [n for n in names if not (onnx_dir / f"{n}.onnx").is_file()]
    if missing or not names:
        raise StaleEngineError(
            f"{onnx_dir} lacks {', '.join(f'{n}.onnx' for n in missing) or 'any ONNX graph'}; "
            "re-run `sv3d-trt export`"
        )
    return names


def _check_precision(export_precision: Precision, precision: Precision, builder: EngineBuilder, onnx_dir: Path) -> None:
    if not precision.quantized and precision != export_precision:
        raise StaleEngineError(
            f"{onnx_dir} was exported in {export_precision.value}; strongly typed engines keep the "
            f"ONNX dtypes, so a {precision.value} build needs a {precision.value} export: "
            f"`sv3d-trt export --checkpoint CKPT --out DIR --precision {precision.value}`"
        )
    for p in {precision, export_precision}:
        message = unsupported_precision_message(p, builder.targets, builder.known_targets())
        if message:
            raise BackendUnavailableError(f"{builder.backend}: {message}")


def build_engines(
    onnx_dir: str | Path,
    out_dir: str | Path,
    *,
    backend: str | None = None,
    precision: Precision | str | None = None,
    targets: list[str] | None = None,
    progress=None,
    error_samples: int = 4,
) -> Manifest:
    """Build every graph of an export directory into `out_dir/<graph>.engine` + manifest.json.

    precision: None keeps the export's dtype; int8/fp8 quantize the denoise step from the
    export's calibration set (see `quantize.py`) and build the other graphs as exported.
    targets: TensorRT-RTX architectures ("sm89", "sm120", ...); None = portable (RTX) or this
    GPU (full TensorRT). progress: a `rich.progress.Progress` to show TensorRT's phases in.
    error_samples: held-out calibration samples on which the quantized step graph is compared
    with the exported one through onnxruntime (0 skips the check).

    Everything is built into a staging folder beside `out_dir` that replaces it only when
    complete (output_folder.staged_folder): a failed or interrupted rebuild leaves the previous
    engines and manifest usable. One Ctrl-C cancels the build (`Cancellation`).
    """
    onnx_dir, out_dir = Path(onnx_dir), Path(out_dir)
    trt = import_tensorrt(backend)
    export_info = read_export_info(onnx_dir)
    export_precision = Precision(export_info["precision"])
    precision = Precision(precision) if precision is not None else export_precision
    cancel = Cancellation()
    builder = make_builder(trt, targets, out_dir, progress, cancel)
    _check_precision(export_precision, precision, builder, onnx_dir)
    graphs = graphs_to_build(onnx_dir, export_info)
    if precision.quantized and QUANTIZED_GRAPH not in graphs:
        raise StaleEngineError(f"{precision.value} quantizes {QUANTIZED_GRAPH}.onnx, which {onnx_dir} lacks")
    if export_info.get("plugins"):
        if precision.quantized:
            raise StaleEngineError(
                f"{precision.value} calibrates the step graph in onnxruntime, which cannot run the "
                "TemporalAttention plugin nodes of this export; export without plugins for int8/fp8"
            )
        from ..kernels.trt_plugin import register_temporal_attention_plugin

        # The parser turns plugin nodes into this creator's plugins, which carry one cubin per target.
        register_temporal_attention_plugin(trt, archs=[int(a[2:]) for a in builder.targets] if targets else None)
    if precision.quantized:
        from .quantize import require_calibration

        require_calibration(onnx_dir, export_info, precision)

    with staged_folder(out_dir, markers=(MANIFEST_NAME,)) as staging, cancel.on_sigint():
        if builder.timing_cache is not None:  # full TensorRT: carry the cache into the new folder
            if builder.timing_cache.is_file():
                shutil.copy2(builder.timing_cache, staging / TIMING_CACHE)
            builder.timing_cache = staging / TIMING_CACHE
        engines = {graph: _build_graph(builder, graph, onnx_dir, staging, export_precision, precision, error_samples)
                   for graph in graphs}
        data = new_manifest_data(
            backend=builder.backend, builder_version=trt.__version__, targets=builder.targets,
            precision=precision, onnx_dir=onnx_dir, export_info=export_info, engines=engines,
        )
        write_manifest(staging, data)
    return Manifest(data, out_dir)


def _build_graph(builder: EngineBuilder, graph: str, onnx_dir: Path, staging: Path, export_precision: Precision,
                 precision: Precision, error_samples: int) -> dict:
    """Build one graph into `staging`; returns its manifest entry."""
    builder.cancel.check()
    source = onnx_dir / f"{graph}.onnx"
    entry = {"file": f"{graph}{ENGINE_SUFFIX}", "precision": export_precision.value, "source": source_entry(source)}
    built_from = source
    if precision.quantized and graph == QUANTIZED_GRAPH:
        from .quantize import quantize_step_graph

        built_from = staging / f"{graph}.{precision.value}.onnx"
        entry["quantization"] = quantize_step_graph(source, built_from, precision, error_samples=error_samples)
        entry["built_from"] = source_entry(built_from)
        entry["precision"] = precision.value
    log.info("building %s from %s for %s", graph, built_from.name, ", ".join(builder.targets))
    start = time.perf_counter()
    plan, io = builder.build(built_from)
    entry["build_seconds"] = round(time.perf_counter() - start, 3)
    save_engine(plan, staging / entry["file"])
    entry.update(io, sha256=sha256_file(staging / entry["file"]), bytes=plan.nbytes)
    return entry

"""manifest.json and export.json: the records that tie an engine directory to its export.

manifest.json says what a directory of engines was built from, by what, for which GPUs.

Written by `sv3d-trt build` next to the `<graph>.engine` files; read by the runtime before it
deserializes anything, because a TensorRT engine fails obscurely (or not at all, but wrongly)
when loaded by another TensorRT version, on another architecture, or for the wrong SV3D
variant. export.json (`sv3d-trt export`, beside the ONNX graphs) says what the graphs were
exported from, in which precision, with which IO (contract/graphs.py `GraphIO.to_json`).
Torch-free and TensorRT-free: the runtime imports it.

Layout (`FORMAT_VERSION` 1):

    {
      "format": 1, "sv3d_trt_version": "0.1.0", "created": "2026-11-25T13:50:00Z",
      "builder": {"backend": "tensorrt-rtx", "version": "1.7.1.116"},
      "targets": ["sm89", "sm120"],            # architectures the engines run on
      "precision": "int8",                     # requested build precision
      "onnx_dir": "/abs/path/to/onnx",         # where the sources were (for rebuild hints)
      "export": {"config": "tiny", "variant": "sv3d_p", "precision": "fp16",
                 "checkpoint_sha256": "..."},  # copied from the export's export.json
      "engines": {
        "denoise_step": {
          "file": "denoise_step.engine", "sha256": "...", "bytes": 123, "precision": "int8",
          "source": {"file": "denoise_step.onnx", "sha256": "...", "external_data": {...}},
          "built_from": {"file": "denoise_step.int8.onnx", ...},  # quantized only, as "source"
          "inputs":  [{"name": "x", "shape": [21, 4, 72, 72], "dtype": "float16"}, ...],
          "outputs": [...],
          "build_seconds": 0.6,
          "quantization": {...}                # quantized only: calibration + error report
        }, ...
      }
    }
"""
from __future__ import annotations

import datetime
import enum
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..errors import StaleEngineError
from ..fileio import write_json_atomic
from .schema import check_export_info, check_manifest

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
ENGINE_SUFFIX = ".engine"
_HASH_CHUNK = 1 << 24
MAX_RECORD_BYTES = 64 << 20  # manifest.json / export.json are a few kB; refuse to parse more


class Precision(str, enum.Enum):
    """Build precision. fp32/fp16/bf16 are the export's own dtypes (strongly typed networks
    build exactly what the ONNX says); int8/fp8 add Q/DQ to the denoise step at build time."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"
    FP8 = "fp8"

    @property
    def quantized(self) -> bool:
        return self in (Precision.INT8, Precision.FP8)


# Smallest compute capability with hardware support for each precision. bf16 tensor cores
# arrived with Ampere (8.0); fp8 (e4m3) with Ada (8.9). TensorRT-RTX refuses fp8 for older
# targets at build time ("model contains HW-specific datatypes: fp8_e4m3").
_MIN_CAPABILITY = {
    Precision.FP32: (7, 5),
    Precision.FP16: (7, 5),
    Precision.BF16: (8, 0),
    Precision.INT8: (7, 5),
    Precision.FP8: (8, 9),
}


def parse_arch(arch: str | tuple[int, int]) -> tuple[int, int]:
    """'sm89' / 'sm_89' / '8.9' / '89' / (8, 9) -> (8, 9)."""
    if isinstance(arch, tuple):
        return arch
    text = str(arch).strip().lower().removeprefix("sm").lstrip("_")
    if "." in text:
        major, minor = text.split(".", 1)
        return int(major), int(minor)
    if not text.isdigit() or len(text) < 2:
        raise ValueError(f"cannot read compute capability {arch!r}; write it like sm89 or 8.9")
    return int(text[:-1]), int(text[-1])


def arch_name(capability: str | tuple[int, int]) -> str:
    """(8, 9) -> 'sm89'."""
    major, minor = parse_arch(capability)
    return f"sm{major}{minor}"


def precision_supported(precision: Precision, arch: str | tuple[int, int]) -> bool:
    return parse_arch(arch) >= _MIN_CAPABILITY[Precision(precision)]


def unsupported_precision_message(precision: Precision, archs: list[str], known: list[str]) -> str | None:
    """None when every arch supports `precision`, else a sentence naming the offenders and the
    architectures (out of `known`) that would work."""
    precision = Precision(precision)
    bad = [a for a in archs if not precision_supported(precision, a)]
    if not bad:
        return None
    good = [a for a in known if precision_supported(precision, a)]
    return (
        f"precision {precision.value} is not supported on {', '.join(bad)}; "
        f"it needs compute capability >= {'.'.join(map(str, _MIN_CAPABILITY[precision]))} "
        f"(supported targets here: {', '.join(good) or 'none'})"
    )


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Manifest:
    """manifest.json as loaded. `directory` is where it lives (not stored in the file)."""

    data: dict
    directory: Path

    @property
    def backend(self) -> str:
        return self.data["builder"]["backend"]

    @property
    def builder_version(self) -> str:
        return self.data["builder"]["version"]

    @property
    def targets(self) -> list[str]:
        return list(self.data["targets"])

    @property
    def precision(self) -> Precision:
        return Precision(self.data["precision"])

    @property
    def variant(self) -> str | None:
        return self.data.get("export", {}).get("variant")

    @property
    def engines(self) -> dict[str, dict]:
        return self.data["engines"]

    def engine_path(self, graph: str) -> Path:
        return self.directory / self.engines[graph]["file"]

    def rebuild_command(self, backend: str | None = None, targets: list[str] | None = None) -> str:
        """The exact `sv3d-trt build` call that recreates these engines (optionally for
        another backend or other targets)."""
        backend = backend or self.backend
        cmd = (
            f"sv3d-trt build --onnx {self.data.get('onnx_dir') or '<export dir>'} "
            f"--out {self.directory} --backend {backend} --precision {self.precision.value}"
        )
        targets = targets if targets is not None else self.targets
        if backend == "tensorrt-rtx" and targets:
            cmd += f" --target {','.join(targets)}"
        return cmd


def new_manifest_data(
    *, backend: str, builder_version: str, targets: list[str], precision: Precision,
    onnx_dir: Path, export_info: dict, engines: dict[str, dict],
) -> dict:
    return {
        "format": FORMAT_VERSION,
        "sv3d_trt_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "builder": {"backend": backend, "version": builder_version},
        "targets": list(targets),
        "precision": Precision(precision).value,
        "onnx_dir": str(Path(onnx_dir).resolve()),
        "export": {**{k: export_info[k] for k in ("config", "variant", "precision", "checkpoint_sha256")
                      if k in export_info},
                   "graphs": sorted(engines)},  # so verify finds a graph gone missing without the export
        "engines": engines,
    }


def write_manifest(directory: str | os.PathLike, data: dict) -> Manifest:
    directory = Path(directory)
    write_json_atomic(directory / MANIFEST_NAME, data)
    return Manifest(data, directory)


def _read_record(path: Path, missing: str, remedy: str) -> dict:
    """The JSON record at `path` (manifest.json, export.json); StaleEngineError saying `missing`
    when it is absent and `remedy` when it cannot be read."""
    if not path.is_file():
        raise StaleEngineError(f"{path} not found: {missing}")
    if path.stat().st_size > MAX_RECORD_BYTES:
        raise StaleEngineError(f"{path} is {path.stat().st_size} bytes, not a record sv3d-trt wrote; {remedy}")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON or bad UTF-8
        raise StaleEngineError(f"{path} is unreadable ({type(e).__name__}: {str(e)[:200]}); {remedy}") from None


def load_manifest(directory: str | os.PathLike) -> Manifest:
    """Read `<directory>/manifest.json`; StaleEngineError when missing, unreadable or of an
    unknown format."""
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    data = _read_record(
        path,
        missing=f"{directory} holds no engines built by `sv3d-trt build`; "
                f"build them with `sv3d-trt build --onnx <export dir> --out {directory}`",
        remedy="rebuild the engines",
    )
    if isinstance(data, dict) and data.get("format") != FORMAT_VERSION:
        raise StaleEngineError(
            f"{path} has format {data.get('format')!r}, this sv3d-trt reads format {FORMAT_VERSION}; "
            "rebuild the engines with this version of sv3d-trt"
        )
    return Manifest(check_manifest(data, path), directory)


def external_data_files(onnx_path: Path) -> list[str]:
    """Names (relative to the ONNX file) of the weight files an ONNX graph references."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    model = onnx.load(str(onnx_path), load_external_data=False)
    return sorted({ExternalDataInfo(t).location for t in model.graph.initializer if uses_external_data(t)})


def source_entry(onnx_path: Path) -> dict:
    """The manifest's record of an ONNX file an engine was built from: its hash and its weights'."""
    return {
        "file": onnx_path.name,
        "sha256": sha256_file(onnx_path),
        "external_data": {n: sha256_file(onnx_path.parent / n) for n in external_data_files(onnx_path)},
    }


def _onnx_problems(what: str, source: dict, directory: Path, since: str = "the build") -> list[str]:
    """Compare an ONNX file and its external weight files with their recorded hashes."""
    problems = []
    onnx_path = directory / source["file"]
    if not onnx_path.is_file():
        return [f"{what} {onnx_path} is missing"]
    if sha256_file(onnx_path) != source["sha256"]:
        problems.append(f"{what} {onnx_path} changed since {since} (sha256 differs)")
    for name, digest in source.get("external_data", {}).items():
        data_path = directory / name
        if not data_path.is_file() or sha256_file(data_path) != digest:
            problems.append(f"external weights {data_path} missing or changed since {since}")
    return problems


def _export_problems(manifest: Manifest, sources: Path) -> tuple[list[str], list[str]]:
    """The export beside the sources must be the one the engines were built from: the same
    config, variant and precision. Returns (problems, the graphs that export lists)."""
    try:
        info = read_export_info(sources)
    except StaleEngineError as e:
        return [str(e)], []
    built = manifest.data.get("export", {})
    return ([f"built from a {built[k]} export, but {sources} holds a {info[k]} one ({k})"
             for k in ("config", "variant", "precision") if k in built and built[k] != info[k]],
            list(info.get("graphs", {})))


def verify_engines(directory: str | os.PathLike, onnx_dir: str | os.PathLike | None = None) -> Manifest:
    """Re-hash every engine (and its quantized ONNX) against the manifest, and the source ONNX
    graphs too when their directory exists (`onnx_dir`, else the one recorded at build time).

    Returns the manifest; raises StaleEngineError listing every mismatch and the rebuild command.
    """
    manifest = load_manifest(directory)
    problems = []
    for graph, entry in manifest.engines.items():
        path = manifest.directory / entry["file"]
        if not path.is_file():
            problems.append(f"{graph}: engine {path} is missing")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{graph}: engine {path} is corrupt or was replaced (sha256 differs)")
        if "built_from" in entry:
            problems += [f"{graph}: {p}" for p in _onnx_problems("quantized graph", entry["built_from"], manifest.directory)]
    expected = list(manifest.data.get("export", {}).get("graphs", []))  # the graphs built, recorded at build time
    sources = Path(onnx_dir) if onnx_dir is not None else Path(manifest.data.get("onnx_dir", ""))
    if onnx_dir is not None or (manifest.data.get("onnx_dir") and sources.is_dir()):
        export_problems, exported = _export_problems(manifest, sources)
        problems += export_problems
        expected += [g for g in exported if g not in expected]
        for graph, entry in manifest.engines.items():
            problems += [f"{graph}: {p}" for p in _onnx_problems("source", entry["source"], sources)]
    problems += [f"{g}: the export has this graph, the manifest no engine for it"
                 for g in expected if g not in manifest.engines]
    if problems:
        raise StaleEngineError(
            f"engines in {manifest.directory} do not match their manifest:\n  - "
            + "\n  - ".join(problems)
            + f"\nrebuild with: {manifest.rebuild_command()}"
        )
    return manifest


def check_compatible(
    manifest: Manifest,
    backend: str,
    trt_version: str,
    gpu_compute_capability: str | tuple[int, int],
    variant: str | None = None,
) -> None:
    """Refuse engines this process cannot load: another TensorRT flavour or version, a GPU
    architecture the engines were not built for, or another SV3D variant. The message says
    what mismatched and the exact command that rebuilds for this machine."""
    gpu = arch_name(gpu_compute_capability)
    problems = []
    if manifest.backend != backend:
        problems.append(f"built with {manifest.backend}, loading with {backend}")
    if manifest.builder_version != trt_version:
        problems.append(
            f"built by {manifest.backend} {manifest.builder_version}, this is {trt_version} "
            "(engines only load in the exact TensorRT version that built them)"
        )
    if gpu not in manifest.targets:
        problems.append(f"built for {', '.join(manifest.targets)}, this GPU is {gpu}")
    if variant is not None and manifest.variant is not None and manifest.variant != variant:
        problems.append(f"built for {manifest.variant}, requested {variant} (export a {variant} checkpoint first)")
    if problems:
        raise StaleEngineError(
            f"engines in {manifest.directory} cannot be used here: " + "; ".join(problems)
            + f". Rebuild with: {manifest.rebuild_command(backend=backend, targets=[gpu])}"
        )


EXPORT_INFO = "export.json"  # written by `sv3d-trt export` beside the ONNX graphs


def write_export_info(directory: str | Path, info: dict) -> None:
    write_json_atomic(Path(directory) / EXPORT_INFO, info)


def read_export_info(directory: str | Path, require_graphs: tuple[str, ...] = ()) -> dict:
    """export.json of an export directory; StaleEngineError naming the export command when it is
    absent, unreadable or malformed (contract/schema.py), or lists none of `require_graphs` (a
    runtime that runs all of them passes GRAPH_NAMES). The required graphs' files are re-hashed
    against the export's record, as `verify --onnx` re-hashes them against a manifest: a
    changed graph is refused, not run."""
    path = Path(directory) / EXPORT_INFO
    info = check_export_info(_read_record(
        path,
        missing=f"{directory} is not an export directory; "
                f"create one with `sv3d-trt export --checkpoint CKPT --out {directory}`",
        remedy="re-run `sv3d-trt export`",
    ), path)
    graphs = info.get("graphs", {})
    missing = [g for g in require_graphs if g not in graphs]
    if missing:
        raise StaleEngineError(f"{path} lists no {', '.join(missing)} graph; re-run `sv3d-trt export` for all graphs")
    unhashed = [g for g in require_graphs if "source" not in graphs[g]]
    if unhashed:
        raise StaleEngineError(f"{path} records no sha256 for {', '.join(unhashed)} (an export from an older "
                               "sv3d-trt); re-run `sv3d-trt export`")
    problems = [f"{g}: {p}" for g in require_graphs
                for p in _onnx_problems("graph", graphs[g]["source"], Path(directory), since="the export")]
    if problems:
        raise StaleEngineError(f"{directory} does not match its export.json:\n  - " + "\n  - ".join(problems)
                               + "\nre-run `sv3d-trt export`")
    return info


def source_export_info(manifest: Manifest) -> dict | None:
    """The export.json the engines were built from, when its directory is still there (else None)."""
    path = Path(manifest.data.get("onnx_dir") or "") / EXPORT_INFO
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def engines_use_plugins(manifest_data: dict, export_info: dict | None) -> bool | None:
    """Whether the engines hold TemporalAttention plugin layers: from the manifest's copy of the
    export settings, else the source export.json; None when neither says."""
    for source in (manifest_data.get("export", {}), export_info or {}):
        if "plugins" in source:
            return bool(source["plugins"])
    return None

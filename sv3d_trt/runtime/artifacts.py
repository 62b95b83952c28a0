"""Which backend runs a given artifact: an engine directory, an ONNX export, or a checkpoint.

    <dir>/manifest.json   -> the manifest's builder: tensorrt or tensorrt-rtx  (sv3d-trt build)
    <dir>/export.json     -> ort                                              (sv3d-trt export)
    <file>.safetensors    -> torch-eager                                      (a checkpoint)

`--backend` forces a choice; a choice the artifact cannot serve, or a package that is not
installed, fails with the command that fixes it. Torch-free: only the chosen backend's module
is imported.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from ..contract.backends import ENGINE_BACKENDS, INFO, TORCH_BACKENDS, canonical_backend
from ..contract.manifest import EXPORT_INFO, MANIFEST_NAME
from ..errors import BackendUnavailableError, StaleEngineError
from .backend import Backend, backend_class


def artifact_kind(path: str | Path) -> str:
    """"engines", "onnx" or "checkpoint"; StaleEngineError naming the commands that make one."""
    path = Path(path)
    if path.is_dir() and (path / MANIFEST_NAME).is_file():
        return "engines"
    if path.is_dir() and (path / EXPORT_INFO).is_file():
        return "onnx"
    if path.is_file():
        return "checkpoint"
    raise StaleEngineError(
        f"{path} is neither an engine directory (manifest.json), an ONNX export (export.json) nor a "
        f"checkpoint file; make one with `sv3d-trt export --checkpoint CKPT --out {path}` and optionally "
        f"`sv3d-trt build --onnx {path} --out ENGINES`"
    )


def _manifest_backend(path: Path) -> str:
    try:
        return json.loads((path / MANIFEST_NAME).read_text())["builder"]["backend"]
    except (OSError, ValueError, KeyError) as e:
        raise StaleEngineError(f"{path / MANIFEST_NAME} is unreadable ({e}); rebuild with `sv3d-trt build`") from e


def choose_backend(path: str | Path, backend: str | None = None) -> str:
    """The canonical backend name for `path`, honouring a forced `backend` when the artifact serves it."""
    path = Path(path)
    kind = artifact_kind(path)
    default = {"engines": _manifest_backend(path) if kind == "engines" else None, "onnx": "ort",
               "checkpoint": "torch-eager"}[kind]
    if backend is None:
        return default
    name = canonical_backend(backend)
    if kind == "engines" and name not in ENGINE_BACKENDS:
        raise BackendUnavailableError(
            f"{path} holds {default} engines; the {name} backend needs "
            + ("an ONNX export (--onnx DIR)" if name == "ort" else "a checkpoint (--checkpoint CKPT)")
        )
    if kind == "engines" and name != default:
        raise StaleEngineError(
            f"{path} holds {default} engines, not {name} ones; build them with "
            f"`sv3d-trt build --onnx <export dir> --out {path} --backend {name}`"
        )
    if kind == "onnx" and name in ENGINE_BACKENDS:
        raise BackendUnavailableError(
            f"{path} is an ONNX export; build {name} engines from it first: "
            f"`sv3d-trt build --onnx {path} --out ENGINES --backend {name}`, then pass --engines ENGINES"
        )
    if kind == "onnx" and name in TORCH_BACKENDS:
        raise BackendUnavailableError(f"the {name} backend runs a checkpoint (--checkpoint CKPT), not an ONNX export")
    if kind == "checkpoint" and name not in TORCH_BACKENDS:
        raise BackendUnavailableError(
            f"{path} is a checkpoint; the {name} backend runs an export: "
            f"`sv3d-trt export --checkpoint {path} --out ONNX`"
            + (f" then `sv3d-trt build --onnx ONNX --out ENGINES --backend {name}`" if name in ENGINE_BACKENDS else "")
        )
    return name


def require_installed(name: str) -> None:
    """BackendUnavailableError with the install command when the backend's package is absent."""
    module, install = INFO[name].module, INFO[name].install
    if importlib.util.find_spec(module) is None:
        raise BackendUnavailableError(f"the {name} backend needs the `{module}` package: `{install}`")


def open_backend(path: str | Path, backend: str | None = None, device: str | None = None, **options) -> Backend:
    """Load the backend that serves `path` (see the module docstring). `device` defaults to the
    backend's own default (cuda for engines, auto for ort, cpu for torch)."""
    name = choose_backend(path, backend)
    require_installed(name)
    cls = backend_class(name)
    if device is not None:
        options["device"] = device
    if name in TORCH_BACKENDS:
        return cls.from_checkpoint(path, **options)
    return cls.from_artifacts(path, **options)

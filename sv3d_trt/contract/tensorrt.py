"""The one import seam for TensorRT: full TensorRT (`tensorrt`) or TensorRT-RTX (`tensorrt_rtx`).

Both flavours expose the same Python API family, so every builder and runner in this package
takes the module returned here and never imports either one itself (Polygraphy's
`mod.lazy_import("tensorrt")` habit). Torch-free on purpose: the builder (export/build.py)
and the engine runtime (runtime/trt.py) both import this.

Auto-pick (`backend=None`): full TensorRT when it imports, else TensorRT-RTX. An explicit
backend wins and fails loudly when its package is missing.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import os
from pathlib import Path
from types import ModuleType

from ..errors import BackendUnavailableError
from .backends import ENGINE_BACKENDS, INFO, canonical_backend

_MIN_TENSORRT_MAJOR = 10

# TensorRT-RTX wheel packaging bug (TensorRT-RTX 1.7): the ONNX parser dlopens the unversioned
# core library, but `tensorrt_rtx_libs` ships only the versioned one; parsing a plugin node then
# aborts the whole process (SIGABRT), which no Python `except` can catch.
_RTX_LIBS_PACKAGE = "tensorrt_rtx_libs"
_RTX_CORE_SONAME = "libtensorrt_rtx.so.1"
_RTX_CORE_UNVERSIONED = "libtensorrt_rtx.so"


def _try_import(module_name: str) -> tuple[ModuleType | None, str]:
    try:
        return importlib.import_module(module_name), ""
    except (ImportError, OSError) as e:  # OSError: bindings present, shared libraries missing
        return None, f"{type(e).__name__}: {e}"


def import_tensorrt(backend: str | None = None) -> ModuleType:
    """Return the `tensorrt` or `tensorrt_rtx` module.

    backend: "tensorrt", "tensorrt-rtx" or None (auto: full TensorRT if importable, else RTX).
    Raises BackendUnavailableError naming the install command when nothing usable is installed.
    """
    if backend is None:
        names = list(ENGINE_BACKENDS)
    else:
        name = canonical_backend(backend)
        if name not in ENGINE_BACKENDS:
            raise BackendUnavailableError(
                f"backend {backend!r} is not a TensorRT backend; choose tensorrt or tensorrt-rtx"
            )
        names = [name]

    reasons = []
    for name in names:
        module_name, install = INFO[name].module, INFO[name].install
        trt, reason = _try_import(module_name)
        if trt is None:
            reasons.append(f"{name}: {reason}; install with `{install}`")
            continue
        if name == "tensorrt" and int(trt.__version__.split(".")[0]) < _MIN_TENSORRT_MAJOR:
            reasons.append(
                f"tensorrt {trt.__version__} is older than {_MIN_TENSORRT_MAJOR}; "
                f"upgrade with `{install}`"
            )
            continue
        return trt
    raise BackendUnavailableError("no usable TensorRT found. " + " | ".join(reasons))


def backend_of(trt: ModuleType) -> str:
    """The canonical backend name ("tensorrt" or "tensorrt-rtx") of a module from import_tensorrt."""
    return "tensorrt-rtx" if trt.__name__.split(".")[0] == "tensorrt_rtx" else "tensorrt"


def _rtx_libs_dir() -> Path | None:
    # find_spec, not import: importing tensorrt_rtx_libs dlopens every library in it.
    spec = importlib.util.find_spec(_RTX_LIBS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def ensure_parser_library(libs_dir: str | os.PathLike | None = None) -> Path | None:
    """Make the TensorRT-RTX ONNX parser find its core library; call before any ONNX parse.

    Creates `libtensorrt_rtx.so -> libtensorrt_rtx.so.1` inside the `tensorrt_rtx_libs` package
    directory when missing. Idempotent. Returns the link path, or None when TensorRT-RTX's
    library wheel is not installed (full TensorRT needs nothing). Raises BackendUnavailableError
    with the exact fix when the directory is read-only.
    """
    libs = Path(libs_dir) if libs_dir is not None else _rtx_libs_dir()
    if libs is None:
        return None
    link = libs / _RTX_CORE_UNVERSIONED
    target = libs / _RTX_CORE_SONAME
    if link.exists():  # follows the link: a dangling one is repaired below
        return link
    if not target.exists():
        raise BackendUnavailableError(
            f"{target} is missing: the TensorRT-RTX library wheel is broken; "
            "reinstall with `pip install --force-reinstall tensorrt-rtx-cu13`"
        )
    try:
        if link.is_symlink():
            link.unlink()
        link.symlink_to(_RTX_CORE_SONAME)  # relative, so the package directory stays movable
    except FileExistsError:  # another process created it between our check and symlink
        pass
    except OSError as e:
        raise BackendUnavailableError(
            f"TensorRT-RTX's ONNX parser needs {link} (wheel packaging bug) and it cannot be "
            f"created here ({e.strerror}); run once with write access: "
            f"`ln -s {_RTX_CORE_SONAME} {link}`"
        ) from e
    return link


@functools.cache
def logger_class(trt: ModuleType):
    """An ILogger for `trt` that forwards to `logging` and keeps the errors, so a failed
    build or load can raise them in its exception instead of leaving them on stderr."""
    log = logging.getLogger("sv3d_trt.tensorrt")

    class CollectingLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.interrupted = False  # Ctrl-C landed in this callback: the caller re-raises it

        def log(self, severity, msg):
            try:
                if severity <= trt.ILogger.Severity.ERROR:
                    self.errors.append(msg.strip())
                    log.error("%s", msg)
                elif severity == trt.ILogger.Severity.WARNING:
                    log.warning("%s", msg)
                else:
                    log.debug("%s", msg)
            except KeyboardInterrupt:  # raised here it would die in TensorRT's C++ caller
                self.interrupted = True

    return CollectingLogger

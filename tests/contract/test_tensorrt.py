"""The TensorRT import seam: auto-pick, explicit choice, install hints, the RTX parser symlink."""
from __future__ import annotations

import importlib
import types
from pathlib import Path

import pytest

from sv3d_trt.errors import BackendUnavailableError
from sv3d_trt.contract import tensorrt
from sv3d_trt.contract.tensorrt import backend_of, ensure_parser_library, import_tensorrt


def _fake_modules(monkeypatch, available: dict[str, str]):
    """Make import_module see only `available` ({module name: __version__}) among the TRT modules."""
    real = importlib.import_module

    def fake(name, *args, **kwargs):
        if name in ("tensorrt", "tensorrt_rtx"):
            if name not in available:
                raise ModuleNotFoundError(f"No module named {name!r}")
            return types.SimpleNamespace(__name__=name, __version__=available[name])
        return real(name, *args, **kwargs)

    monkeypatch.setattr(tensorrt.importlib, "import_module", fake)


def test_auto_prefers_full_tensorrt(monkeypatch):
    _fake_modules(monkeypatch, {"tensorrt": "10.9.0", "tensorrt_rtx": "1.7.1"})
    trt = import_tensorrt()
    assert trt.__name__ == "tensorrt" and backend_of(trt) == "tensorrt"


def test_auto_falls_back_to_rtx(monkeypatch):
    _fake_modules(monkeypatch, {"tensorrt_rtx": "1.7.1"})
    trt = import_tensorrt(None)
    assert backend_of(trt) == "tensorrt-rtx"


def test_explicit_backend_wins(monkeypatch):
    _fake_modules(monkeypatch, {"tensorrt": "10.9.0", "tensorrt_rtx": "1.7.1"})
    assert import_tensorrt("tensorrt-rtx").__name__ == "tensorrt_rtx"


def test_missing_backend_names_install_command(monkeypatch):
    _fake_modules(monkeypatch, {"tensorrt_rtx": "1.7.1"})
    with pytest.raises(BackendUnavailableError, match="pypi.nvidia.com tensorrt-cu13"):
        import_tensorrt("tensorrt")
    _fake_modules(monkeypatch, {})
    with pytest.raises(BackendUnavailableError, match="pip install tensorrt-rtx-cu13"):
        import_tensorrt()


def test_old_tensorrt_rejected(monkeypatch):
    _fake_modules(monkeypatch, {"tensorrt": "8.6.1"})
    with pytest.raises(BackendUnavailableError, match="older than 10"):
        import_tensorrt("tensorrt")


def test_non_trt_backend_rejected():
    with pytest.raises(BackendUnavailableError, match="not a TensorRT backend"):
        import_tensorrt("ort")


def test_real_rtx_module_if_installed():
    pytest.importorskip("tensorrt_rtx", reason="tensorrt-rtx-cu13 not installed")
    trt = import_tensorrt("tensorrt-rtx")
    assert hasattr(trt, "Builder") and hasattr(trt, "OnnxParser")
    link = ensure_parser_library()
    assert link is not None and link.resolve().name == "libtensorrt_rtx.so.1"


def test_parser_symlink_created_and_idempotent(tmp_path: Path):
    (tmp_path / "libtensorrt_rtx.so.1").write_bytes(b"\x7fELF fake")
    link = ensure_parser_library(tmp_path)
    assert link == tmp_path / "libtensorrt_rtx.so"
    assert link.is_symlink() and link.read_bytes() == b"\x7fELF fake"
    assert ensure_parser_library(tmp_path) == link  # second call: nothing to do, no error


def test_parser_symlink_repairs_dangling_link(tmp_path: Path):
    (tmp_path / "libtensorrt_rtx.so").symlink_to("libtensorrt_rtx.so.0")  # points nowhere
    (tmp_path / "libtensorrt_rtx.so.1").write_bytes(b"lib")
    assert ensure_parser_library(tmp_path).read_bytes() == b"lib"


def test_parser_symlink_read_only_says_what_to_do(tmp_path: Path, monkeypatch):
    (tmp_path / "libtensorrt_rtx.so.1").write_bytes(b"lib")

    def refuse(self, target):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "symlink_to", refuse)  # root ignores chmod, so fake the refusal
    with pytest.raises(BackendUnavailableError, match=r"ln -s libtensorrt_rtx.so.1 .*libtensorrt_rtx.so"):
        ensure_parser_library(tmp_path)


def test_parser_symlink_broken_wheel(tmp_path: Path):
    with pytest.raises(BackendUnavailableError, match="force-reinstall tensorrt-rtx-cu13"):
        ensure_parser_library(tmp_path)

"""The layering the contract package exists for: export/ and runtime/ both import contract/,
never each other (read from the import statements of every module), contract/ imports neither
and no torch, and the engine path (Pipeline over runtime/trt.py) loads no torch at all."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "sv3d_trt"


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module a file imports (relative imports resolved), at any depth:
    function-level (lazy) imports count too."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module.removesuffix(".__init__")
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


def imports_of(subpackage: str) -> dict[str, set[str]]:
    return {str(p.relative_to(PACKAGE)): imported_modules(p) for p in sorted((PACKAGE / subpackage).rglob("*.py"))}


def _offenders(subpackage: str, forbidden: tuple[str, ...]) -> list[str]:
    return [f"{f} imports {m}" for f, names in imports_of(subpackage).items() for m in sorted(names)
            if any(m == x or m.startswith(x + ".") for x in forbidden)]


def test_the_resolver_sees_relative_and_lazy_imports(tmp_path):
    assert "sv3d_trt.contract.graphs" in imported_modules(PACKAGE / "export" / "graphs.py")
    assert "sv3d_trt.contract.manifest.load_manifest" in imported_modules(PACKAGE / "runtime" / "trt" / "backend.py")
    assert "sv3d_trt.kernels.trt_plugin" in imported_modules(PACKAGE / "export" / "build.py")  # inside a function


@pytest.mark.parametrize("subpackage, forbidden", [
    ("export", ("sv3d_trt.runtime",)),
    ("runtime", ("sv3d_trt.export",)),
    ("contract", ("sv3d_trt.export", "sv3d_trt.runtime", "torch", "sv3d_trt.models", "tensorrt", "tensorrt_rtx")),
])
def test_layering(subpackage, forbidden):
    assert _offenders(subpackage, forbidden) == []


def test_engine_path_imports_no_torch():
    code = ("import sys; import sv3d_trt, sv3d_trt.runtime.pipeline, sv3d_trt.runtime.trt, sv3d_trt.runtime.ort, "
            "sv3d_trt.runtime.cuda, "
            "sv3d_trt.runtime.artifacts, sv3d_trt.runtime.batch, sv3d_trt.contract.manifest, "
            "sv3d_trt.contract.tensorrt, sv3d_trt.contract.calibration; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

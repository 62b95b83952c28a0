"""The one vocabulary of backend names (CLI flags, bench, run.json, Python API), and what each
backend runs, which extra installs it and the command that fixes its absence.

    backend        runs (artifact kind)            needs module     extra
    torch-eager    a checkpoint (.safetensors)     torch            torch
    torch-compile  a checkpoint                    torch            torch
    torch-fast     a checkpoint                    torch            torch
    ort            an ONNX export (export.json)    onnxruntime      onnx
    tensorrt       engines (manifest.json)         tensorrt         (NVIDIA's index)
    tensorrt-rtx   engines (manifest.json)         tensorrt_rtx     trt-rtx
"""
from __future__ import annotations

from dataclasses import dataclass

ALIASES = {"torch": "torch-eager", "onnxruntime": "ort"}


@dataclass(frozen=True)
class BackendInfo:
    name: str
    artifact: str  # "checkpoint" | "onnx" | "engines" (contract/artifacts.py)
    module: str  # the python module the backend cannot run without
    extra: str | None  # the pyproject extra that installs it (None: not on PyPI alone)
    install: str  # the command that installs it


_TORCH_INSTALL = "pip install 'sv3d-trt[torch]'"
INFO = {
    b.name: b
    for b in (
        BackendInfo("torch-eager", "checkpoint", "torch", "torch", _TORCH_INSTALL),
        BackendInfo("torch-compile", "checkpoint", "torch", "torch", _TORCH_INSTALL),
        BackendInfo("torch-fast", "checkpoint", "torch", "torch", _TORCH_INSTALL),
        BackendInfo("ort", "onnx", "onnxruntime", "onnx", "pip install onnxruntime (CPU) or onnxruntime-gpu (CUDA)"),
        # Full TensorRT's libraries come from NVIDIA's index; PyPI holds only its bindings.
        BackendInfo("tensorrt", "engines", "tensorrt", None,
                    "pip install --extra-index-url https://pypi.nvidia.com tensorrt-cu13"),
        BackendInfo("tensorrt-rtx", "engines", "tensorrt_rtx", "trt-rtx", "pip install tensorrt-rtx-cu13"),
    )
}
BACKENDS = tuple(INFO)
TORCH_BACKENDS = tuple(n for n, b in INFO.items() if b.artifact == "checkpoint")
ONNX_BACKENDS = tuple(n for n, b in INFO.items() if b.artifact == "onnx")
ENGINE_BACKENDS = tuple(n for n, b in INFO.items() if b.artifact == "engines")


def canonical_backend(name: str) -> str:
    """Map a user-facing backend name or alias to its canonical name."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in BACKENDS:
        choices = ", ".join(BACKENDS + tuple(ALIASES))
        raise ValueError(f"unknown backend {name!r}; choose one of: {choices}")
    return key


def backend_info(name: str) -> BackendInfo:
    return INFO[canonical_backend(name)]

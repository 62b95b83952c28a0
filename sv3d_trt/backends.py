"""The one vocabulary of backend names (CLI flags, bench, run.json, Python API)."""
from __future__ import annotations

BACKENDS = ("torch-eager", "torch-compile", "torch-fast", "ort", "tensorrt", "tensorrt-rtx")
ALIASES = {"torch": "torch-eager", "onnxruntime": "ort"}


def canonical_backend(name: str) -> str:
    """Map a user-facing backend name or alias to its canonical name."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in BACKENDS:
        choices = ", ".join(BACKENDS + tuple(ALIASES))
        raise ValueError(f"unknown backend {name!r}; choose one of: {choices}")
    return key

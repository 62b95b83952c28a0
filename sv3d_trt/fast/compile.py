"""torch.compile of the runtime UNet, with an on-disk cache so a second process starts fast.

Inductor's compiled artifacts (FX graph, Triton kernels, autotuning results) are saved with
`torch.compiler.save_cache_artifacts()` after the first call (compilation is lazy) and loaded
with `load_cache_artifacts()` before the next process's first call: the second start skips
code generation and autotuning (the cache is keyed by graph, so a stale file is just unused).
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from ..fileio import write_bytes_atomic

log = logging.getLogger(__name__)


class CompiledModule(nn.Module):
    """`torch.compile(module, mode=mode)` that saves the compile cache to `cache_file` once, after
    its first call, when given one."""

    def __init__(self, module: nn.Module, mode: str = "default", cache_file: Path | None = None):
        super().__init__()
        self.cache_file = Path(cache_file) if cache_file is not None else None
        if self.cache_file is not None and self.cache_file.is_file():
            torch.compiler.load_cache_artifacts(self.cache_file.read_bytes())
            log.info("loaded compile cache %s", self.cache_file)
        self.compiled = torch.compile(module, mode=mode, dynamic=False)
        self._saved = self.cache_file is None

    def forward(self, *args):
        out = self.compiled(*args)
        if not self._saved:
            self._saved = True
            artifacts = torch.compiler.save_cache_artifacts()
            if artifacts is not None:
                write_bytes_atomic(self.cache_file, artifacts[0])
                log.info("saved compile cache %s", self.cache_file)
        return out


def cache_file(directory: Path, name: str, device_type: str, dtype: torch.dtype, mode: str) -> Path:
    """One cache file per model, device kind, dtype, mode and torch version."""
    tag = f"{name}-{device_type}-{str(dtype).replace('torch.', '')}-{mode}-torch{torch.__version__}"
    return Path(directory) / (tag.replace("/", "_").replace("+", "_") + ".bin")

"""`torch-compile`: the reference recipe (`torch-eager`) with its UNet under torch.compile.

Nothing else changes: same models, same step, same decode, so it measures what the compiler
alone buys (performance.md: 415 -> 237 ms per step on an H100). The compiled artifacts are
cached on disk (`cache_dir`) after the first step, so a second process skips code generation.
"""
from __future__ import annotations

from pathlib import Path

from ..fast.compile import CompiledModule, cache_file
from ..fast.options import COMPILE_MODES
from ..models.checkpoint import SV3DModels
from .torch_eager import TorchEagerBackend


class TorchCompileBackend(TorchEagerBackend):
    name = "torch-compile"

    def __init__(self, models: SV3DModels, device: str = "cpu", dtype: str = "fp32", mode: str = "default",
                 cache_dir: str | Path | None = None):
        if mode not in COMPILE_MODES:
            raise ValueError(f"unknown compile mode {mode!r}; choose one of {COMPILE_MODES}")
        super().__init__(models, device=device, dtype=dtype)
        self.mode = mode
        cache = None
        if cache_dir is not None:
            cache = cache_file(Path(cache_dir), f"{self.config.name}-{self.variant}-unet", self.device.type,
                               self.dtype, mode)
        self.models.unet = CompiledModule(models.unet, mode, cache)

    @classmethod
    def from_checkpoint(cls, path, device: str = "cpu", dtype: str = "fp32", mode: str = "default",
                        cache_dir: str | Path | None = None, **_):
        eager = TorchEagerBackend.from_checkpoint(path, device=device, dtype=dtype, autocast=False)
        return cls(eager.models, device=device, dtype=dtype, mode=mode, cache_dir=cache_dir)

    def describe(self) -> dict:
        return {**super().describe(), "compile_mode": self.mode}

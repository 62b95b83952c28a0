"""The switches of the `torch-fast` backend: which transforms turn the reference UNet into the
runtime one. Each is exact in fp32 (tests/runtime/test_torch_fast.py) and can be switched off
alone, to measure it or to rule it out when numbers disagree.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class FastOptions:
    fold: bool = True  # exact cross-attention fold: attn2 outputs computed once per image (models/fold.py)
    hoist: bool = True  # frame embeddings, mixer alphas, label_emb(y), one time-embedding row: out of the step
    fused_kernels: bool = True  # GroupNorm(+emb, +SiLU), LayerNorm, GEGLU, blend(+residual) as single kernels
    packed_attention: bool = True  # one qkv GEMM per self-attention; temporal attention on the native layout
    channels_last: bool = True  # NHWC convolutions; the temporal blocks' 5-D views need no copies then
    cuda_graph: bool = True  # the whole CFG step captured once and replayed (CUDA only)
    compile: str | None = None  # torch.compile mode for the runtime UNet, None: eager
    compile_cache: Path | None = None  # a directory: compiled artifacts saved after the first call, loaded at start
    decode_dtype: str | None = None  # VAE decoder dtype; None: the UNet's on CUDA, fp32 on CPU

    def __post_init__(self):
        if self.compile is not None and self.compile not in COMPILE_MODES:
            raise ValueError(f"unknown compile mode {self.compile!r}; choose one of {COMPILE_MODES}")
        if self.decode_dtype not in (None, "fp32", "fp16", "bf16"):
            raise ValueError(f"decode_dtype must be fp32, fp16, bf16 or None, got {self.decode_dtype!r}")
        if self.compile_cache is not None:
            object.__setattr__(self, "compile_cache", Path(self.compile_cache))

    @classmethod
    def reference(cls) -> FastOptions:
        """Every transform off: the runtime UNet computes exactly what the plain one does."""
        return cls(**{f.name: False for f in fields(cls) if f.type == "bool"})

    def for_device(self, device_type: str) -> FastOptions:
        """What can run on this device: CUDA graphs need CUDA, and torch.compile's own
        CUDA graphs (reduce-overhead) replace ours."""
        graph = self.cuda_graph and device_type == "cuda" and self.compile != "reduce-overhead"
        return replace(self, cuda_graph=graph)

    def describe(self) -> dict:
        return {f.name: (str(v) if isinstance(v, Path) else v) for f in fields(self) for v in [getattr(self, f.name)]}

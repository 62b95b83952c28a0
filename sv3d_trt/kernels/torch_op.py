"""`sv3d_trt::temporal_attention` as a torch.library custom op, and the one place that picks an
implementation of temporal attention.

The op runs the Triton kernel on CUDA and the PyTorch reference elsewhere; its fake impl lets
torch.compile and torch.export trace it as one opaque node. `temporal_attention()` is what
models call: it decides once per call between the op and the plain reference.
"""
from __future__ import annotations

import torch

from . import temporal_attention_kernel as ta

IMPLS = ("auto", "triton", "reference")

# Set only inside `onnx_op.emit_plugin_nodes()`: export the op itself (-> a TemporalAttention
# plugin node) instead of its standard-op decomposition.
_emit_plugin_nodes = False


@torch.library.custom_op("sv3d_trt::temporal_attention", mutates_args=())
def temporal_attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, frames: int) -> torch.Tensor:
    """Fused temporal attention; (B*T, H*W, heads, d) in and out. Reference math off CUDA."""
    return ta.reference(q, k, v, frames).contiguous()


@temporal_attention_op.register_kernel("cuda")
def _temporal_attention_cuda(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, frames: int) -> torch.Tensor:
    return ta.temporal_attention_triton(q, k, v, frames)


@temporal_attention_op.register_fake
def _temporal_attention_fake(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, frames: int) -> torch.Tensor:
    return q.new_empty(q.shape)  # (B*T, H*W, heads, d), contiguous like both real impls


def _exporting() -> bool:
    return torch.compiler.is_exporting() or torch.jit.is_tracing()


def temporal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, frames: int, impl: str = "auto"
) -> torch.Tensor:
    """Softmax attention across the `frames` frames of each video at each spatial location.

    q, k, v: (B*T, H*W, heads, head_dim), any strides. Returns (B*T, H*W, heads, head_dim).
    impl: "auto" (the custom op -> Triton kernel on CUDA; the reference on CPU and in a
    standard-op ONNX export; the custom op inside `emit_plugin_nodes()`), "triton" (the kernel;
    CPU tensors need TRITON_INTERPRET=1) or "reference".
    """
    if impl == "auto":
        if _emit_plugin_nodes or (q.is_cuda and not _exporting()):
            return torch.ops.sv3d_trt.temporal_attention(q, k, v, frames)
        return ta.reference(q, k, v, frames)
    if impl == "triton":
        return ta.temporal_attention_triton(q, k, v, frames)
    if impl == "reference":
        return ta.reference(q, k, v, frames)
    raise ValueError(f"unknown impl {impl!r}; choose one of {IMPLS}")

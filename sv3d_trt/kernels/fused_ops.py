"""The fused glue kernels as torch.library custom ops, and the one place that picks an
implementation for each (as `torch_op.temporal_attention` does for attention).

`sv3d_trt::group_norm`, `::layer_norm`, `::geglu`, `::blend` run the Triton kernel on CUDA and
the plain-torch `reference()` elsewhere; their fake impls let torch.compile and CUDA-graph
capture treat each as one opaque node. Models call the `impl="auto"` functions below: the op
for CUDA tensors, the reference (plain torch ops, which trace, export and compile) otherwise.
"""
from __future__ import annotations

import torch

from . import blend as _blend
from . import geglu as _geglu
from . import group_norm as _gn
from . import layer_norm as _ln

IMPLS = ("auto", "triton", "reference")


# ---- group norm (+ SiLU) -------------------------------------------------------------------


@torch.library.custom_op("sv3d_trt::group_norm", mutates_args=())
def group_norm_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float,
                  silu: bool, bias_in: torch.Tensor | None) -> torch.Tensor:
    return _gn.reference(x, weight, bias, groups, eps, silu, bias_in)


@group_norm_op.register_kernel("cuda")
def _group_norm_cuda(x, weight, bias, groups, eps, silu, bias_in):
    return _gn.group_norm_triton(x, weight, bias, groups, eps, silu, bias_in)


@group_norm_op.register_fake
def _group_norm_fake(x, weight, bias, groups, eps, silu, bias_in):
    return torch.empty_like(x if _gn.flat_spatial_stride(x) is not None else x.contiguous())


# ---- layer norm ----------------------------------------------------------------------------


@torch.library.custom_op("sv3d_trt::layer_norm", mutates_args=())
def layer_norm_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    return _ln.reference(x, weight, bias, eps).contiguous()


@layer_norm_op.register_kernel("cuda")
def _layer_norm_cuda(x, weight, bias, eps):
    return _ln.layer_norm_triton(x, weight, bias, eps)


@layer_norm_op.register_fake
def _layer_norm_fake(x, weight, bias, eps):
    return x.new_empty(x.shape)


# ---- GEGLU gate ----------------------------------------------------------------------------


@torch.library.custom_op("sv3d_trt::geglu", mutates_args=())
def geglu_op(h: torch.Tensor) -> torch.Tensor:
    return _geglu.reference(h).contiguous()


@geglu_op.register_kernel("cuda")
def _geglu_cuda(h):
    return _geglu.geglu_triton(h)


@geglu_op.register_fake
def _geglu_fake(h):
    return h.new_empty(*h.shape[:-1], h.shape[-1] // 2)


# ---- spatial/temporal blend ----------------------------------------------------------------


@torch.library.custom_op("sv3d_trt::blend", mutates_args=())
def blend_op(spatial: torch.Tensor, temporal: torch.Tensor, alpha: torch.Tensor,
             residual: torch.Tensor | None) -> torch.Tensor:
    return _blend.reference(spatial, temporal, alpha, residual)


@blend_op.register_kernel("cuda")
def _blend_cuda(spatial, temporal, alpha, residual):
    return _blend.blend_triton(spatial, temporal, alpha, residual)


@blend_op.register_fake
def _blend_fake(spatial, temporal, alpha, residual):
    same = _blend.is_dense(spatial) and all(
        o.stride() == spatial.stride() for o in (temporal, residual) if o is not None)
    return torch.empty_like(spatial if same else spatial.contiguous())


# ---- dispatch ------------------------------------------------------------------------------


def _choose(x: torch.Tensor, impl: str) -> str:
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}; choose one of {IMPLS}")
    if impl == "auto":
        return "op" if x.is_cuda and not (torch.compiler.is_exporting() or torch.jit.is_tracing()) else "reference"
    return impl


def group_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float,
               silu: bool = False, bias_in: torch.Tensor | None = None, impl: str = "auto") -> torch.Tensor:
    """GroupNorm (fp32 statistics) of x (N, C, *spatial), bias_in (N, C, K) added first, SiLU after."""
    how = _choose(x, impl)
    if how == "op":
        return torch.ops.sv3d_trt.group_norm(x, weight, bias, groups, eps, silu, bias_in)
    if how == "triton":
        return _gn.group_norm_triton(x, weight, bias, groups, eps, silu, bias_in)
    return _gn.reference(x, weight, bias, groups, eps, silu, bias_in)


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
               impl: str = "auto") -> torch.Tensor:
    """LayerNorm over the last axis, fp32 statistics."""
    how = _choose(x, impl)
    if how == "op":
        return torch.ops.sv3d_trt.layer_norm(x, weight, bias, eps)
    if how == "triton":
        return _ln.layer_norm_triton(x, weight, bias, eps)
    return _ln.reference(x, weight, bias, eps)


def geglu(h: torch.Tensor, impl: str = "auto") -> torch.Tensor:
    """value * GELU(gate) of a GEGLU projection output h (..., 2D) -> (..., D)."""
    how = _choose(h, impl)
    if how == "op":
        return torch.ops.sv3d_trt.geglu(h)
    if how == "triton":
        return _geglu.geglu_triton(h)
    return _geglu.reference(h)


def blend(spatial: torch.Tensor, temporal: torch.Tensor, alpha: torch.Tensor,
          residual: torch.Tensor | None = None, impl: str = "auto") -> torch.Tensor:
    """a s + (1 - a)(t [+ r]), alpha a one-element tensor (sgm `AlphaBlender`)."""
    how = _choose(spatial, impl)
    if how == "op":
        return torch.ops.sv3d_trt.blend(spatial, temporal, alpha, residual)
    if how == "triton":
        return _blend.blend_triton(spatial, temporal, alpha, residual)
    return _blend.reference(spatial, temporal, alpha, residual)

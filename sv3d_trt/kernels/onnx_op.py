"""The temporal-attention ONNX custom node: domain `sv3d_trt`, op `TemporalAttention`.

Exports decompose temporal attention into standard ops by default (onnxruntime and portable
graphs). For TensorRT with our plugin, the exporter wraps its `torch.onnx.export` call in
`emit_plugin_nodes()`:

    with emit_plugin_nodes() as export_kwargs:  # dynamo=False for the TorchScript exporter
        torch.onnx.export(model, args, path, dynamo=True, **export_kwargs)

Inside, models' `temporal_attention(...)` calls trace as the `sv3d_trt::temporal_attention`
custom op, and the kwargs tell the exporter how to write it: a `custom_translation_table`
(onnxscript) for torch 2.14's default torch.export-based exporter, or `custom_opsets` plus a
registered symbolic for the legacy TorchScript exporter. The node:

    TemporalAttention(q, k, v) -> o, attribute frames:int; q, k, v, o (B*T, H*W, heads, d)

The TensorRT ONNX parser turns an unknown op into the plugin whose name is the op_type
(`trt_plugin.PLUGIN_NAME`), passing node attributes as plugin fields.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import torch

from . import torch_op
from .temporal_attention_kernel import reference

DOMAIN = "sv3d_trt"
OP_TYPE = "TemporalAttention"
OPSET_VERSION = 1


def register_schema() -> None:
    """Register the node's OpSchema with onnx (idempotent): onnxscript builds nodes only from a
    schema, and the checker and shape inference then know the op."""
    import onnx
    from onnx.defs import OpSchema

    if onnx.defs.has(OP_TYPE, DOMAIN):
        return
    onnx.defs.register_schema(OpSchema(
        OP_TYPE, DOMAIN, OPSET_VERSION,
        doc="Softmax attention over the frames of each video at each spatial location; "
            "q, k, v, o: (B*T, H*W, heads, head_dim), scale 1/sqrt(head_dim).",
        inputs=[OpSchema.FormalParameter(name, "T") for name in ("q", "k", "v")],
        outputs=[OpSchema.FormalParameter("o", "T")],
        type_constraints=[("T", ["tensor(float16)", "tensor(bfloat16)", "tensor(float)"], "activations")],
        attributes=[OpSchema.Attribute("frames", OpSchema.AttrType.INT, "frames per video (T)")],
    ))


def _translation_table() -> dict:
    import onnxscript

    register_schema()
    opset = onnxscript.values.Opset(DOMAIN, OPSET_VERSION)

    def temporal_attention(q, k, v, frames: int):
        return opset.TemporalAttention(q, k, v, frames=frames)

    return {torch.ops.sv3d_trt.temporal_attention.default: temporal_attention}


def _legacy_symbolic(g, q, k, v, frames):
    from torch.onnx import symbolic_helper

    out = g.op(f"{DOMAIN}::{OP_TYPE}", q, k, v, frames_i=symbolic_helper._get_const(frames, "i", "frames"))
    out.setType(q.type())
    return out


@contextlib.contextmanager
def emit_plugin_nodes(dynamo: bool = True) -> Iterator[dict]:
    """Export temporal attention as one `sv3d_trt::TemporalAttention` node per call site.

    Yields the keyword arguments to add to `torch.onnx.export(..., dynamo=dynamo)`.
    Not re-entrant and not thread-safe: it flips one module flag for the duration.
    """
    if dynamo:
        kwargs = {"custom_translation_table": _translation_table()}
    else:
        torch.onnx.register_custom_op_symbolic("sv3d_trt::temporal_attention", _legacy_symbolic, OPSET_VERSION)
        kwargs = {"custom_opsets": {DOMAIN: OPSET_VERSION}}
    torch_op._emit_plugin_nodes = True
    try:
        yield kwargs
    finally:
        torch_op._emit_plugin_nodes = False


def onnx_reference_op():
    """An `onnx.reference` op class that evaluates TemporalAttention nodes with `reference()`,
    for checking plugin graphs on CPU: `ReferenceEvaluator(model, new_ops=[onnx_reference_op()])`."""
    from onnx.reference.op_run import OpRun

    class TemporalAttention(OpRun):
        op_domain = DOMAIN

        def _run(self, q, k, v, frames=None):
            out = reference(*(torch.from_numpy(np.ascontiguousarray(x)) for x in (q, k, v)), int(frames))
            return (out.numpy(),)

    return TemporalAttention

"""TemporalAttention as an ONNX custom node: the decomposed export (default) and the plugin-node
export agree with the PyTorch model through the reference implementation, for both exporters."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx.reference import ReferenceEvaluator

from sv3d_trt.kernels.onnx_op import DOMAIN, OP_TYPE, emit_plugin_nodes, onnx_reference_op


def export(model, inputs, path, dynamo: bool, plugins: bool):
    names = [f"x{i}" for i in range(len(inputs))]
    kw = dict(dynamo=dynamo, input_names=names, output_names=[f"y{i}" for i in range(len(inputs))])
    if not dynamo:
        kw["opset_version"] = 17
    if plugins:
        with emit_plugin_nodes(dynamo=dynamo) as extra:
            torch.onnx.export(model, inputs, path, **kw, **extra)
    else:
        torch.onnx.export(model, inputs, path, **kw)
    return onnx.load(path), dict(zip(names, (x.numpy() for x in inputs)))


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_plugin_and_decomposed_graphs_agree(tiny_sites, tmp_path, dynamo):
    model, inputs = tiny_sites
    with torch.no_grad():
        expected = [y.numpy() for y in model(*inputs)]
    assert all(np.abs(y).max() > 0.1 for y in expected)

    dec, feeds = export(model, inputs, tmp_path / "dec.onnx", dynamo, plugins=False)
    plug, _ = export(model, inputs, tmp_path / "plug.onnx", dynamo, plugins=True)

    custom = [n for n in plug.graph.node if n.op_type == OP_TYPE]
    assert len(custom) == len(inputs) and all(n.domain == DOMAIN for n in custom)
    assert [a.i for n in custom for a in n.attribute if a.name == "frames"] == [model.frames] * len(inputs)
    assert not any(n.domain == DOMAIN for n in dec.graph.node)
    assert {"Softmax", "MatMul"} <= {n.op_type for n in dec.graph.node}

    got_dec = ort.InferenceSession(str(tmp_path / "dec.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)
    got_plug = ReferenceEvaluator(plug, new_ops=[onnx_reference_op()]).run(None, feeds)
    for want, a, b in zip(expected, got_dec, got_plug):
        np.testing.assert_allclose(a, want, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(b, want, rtol=1e-4, atol=1e-5)


def test_plugin_mode_ends_with_the_context(tiny_sites, tmp_path):
    model, inputs = tiny_sites
    with emit_plugin_nodes():
        pass
    dec, _ = export(model, inputs, tmp_path / "after.onnx", dynamo=True, plugins=False)
    assert not any(n.domain == DOMAIN for n in dec.graph.node)

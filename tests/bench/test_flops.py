"""FLOP counting: the torch counter (modules) and the ONNX counter (graphs) must agree."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from sv3d_trt.bench.flops import count_flops, onnx_graph_flops, reference_flops, stage_flops_key
from sv3d_trt.models.config import get_config


def test_sdpa_counted_on_cpu_like_on_meta():
    # On CPU, SDPA dispatches to a kernel FlopCounterMode does not know by default.
    shape = (2, 3, 21, 16)  # (B, heads, L, d)
    q, k, v = (torch.randn(shape) for _ in range(3))
    cpu = count_flops(lambda: F.scaled_dot_product_attention(q, k, v))
    meta = count_flops(lambda: F.scaled_dot_product_attention(*(t.to("meta") for t in (q, k, v))))
    assert cpu == meta == 4 * 2 * 3 * 21 * 21 * 16


def _graph(tmp_path, rng):
    """x (6,5) -Gemm-> (6,7) -MatMul-> (6,3);  img (1,4,9,9) -Conv(groups 2, 3x3)-> (1,8,7,7);
    q (42,10,2,8) -TemporalAttention(frames 21)-> same."""
    w1 = rng.standard_normal((7, 5)).astype(np.float32)
    w2 = rng.standard_normal((7, 3)).astype(np.float32)
    wc = rng.standard_normal((8, 2, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Gemm", ["x", "w1"], ["h"], transB=1),
        helper.make_node("MatMul", ["h", "w2"], ["y"]),
        helper.make_node("Conv", ["img", "wc"], ["z"], group=2),
        helper.make_node("TemporalAttention", ["q", "q", "q"], ["o"], domain="sv3d_trt", frames=21),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, (6, 5)),
         helper.make_tensor_value_info("img", TensorProto.FLOAT, (1, 4, 9, 9)),
         helper.make_tensor_value_info("q", TensorProto.FLOAT, (42, 10, 2, 8))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (6, 3)),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, (1, 8, 7, 7)),
         helper.make_tensor_value_info("o", TensorProto.FLOAT, (42, 10, 2, 8))],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(wc, "wc")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("sv3d_trt", 1)])
    path = tmp_path / "g.onnx"
    onnx.save(model, path)
    return path, (w1, w2, wc)


def test_onnx_count_equals_torch_count(tmp_path):
    rng = np.random.default_rng(0)
    path, (w1, w2, wc) = _graph(tmp_path, rng)
    got = onnx_graph_flops(path)
    x, img = torch.randn(6, 5), torch.randn(1, 4, 9, 9)
    q = torch.randn(42, 10, 2, 8)  # (B*T, S, heads, d) -> per video: (B, S*heads, T, d)
    qt = q.reshape(2, 21, 20, 8).transpose(1, 2)
    expected = {
        "Gemm": count_flops(lambda: F.linear(x, torch.from_numpy(w1))),
        "MatMul": count_flops(lambda: torch.randn(6, 7) @ torch.from_numpy(w2)),
        "Conv": count_flops(lambda: F.conv2d(img, torch.from_numpy(wc), groups=2)),
        "TemporalAttention": count_flops(lambda: F.scaled_dot_product_attention(qt, qt, qt)),
    }
    assert all(v > 0 for v in expected.values())
    assert got["by_op"] == expected
    assert got["total"] == sum(expected.values())
    assert got["unresolved"] == []


def test_reference_flops_of_the_full_unet_step():
    # performance.md: one CFG step of the real UNet (42 frames) is 69 TFLOP.
    flops = reference_flops(get_config("full", "sv3d_p"), steps=50)
    assert flops["step"] == pytest.approx(69.0e12, rel=0.01)
    assert 0 < flops["step_folded"] < flops["step"]
    assert flops["denoise"] == 50 * flops["step"]
    assert flops["end_to_end"] == flops["clip"] + flops["vae_encode"] + flops["denoise"] + flops["decode"]
    assert stage_flops_key("decode_14") == "decode"

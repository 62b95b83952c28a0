"""INT8 / FP8 explicit quantization of the step graph: calibration-set format, which layers stay
high precision, and the per-step error of the Q/DQ graph against the fp32 export."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

pytest.importorskip("modelopt.onnx.quantization", reason="nvidia-modelopt (ONNX PTQ) not installed")

from sv3d_trt.contract.calibration import CALIBRATION_PATH, save_calibration  # noqa: E402
from sv3d_trt.contract.manifest import Precision, sha256_file  # noqa: E402
from sv3d_trt.errors import StaleEngineError  # noqa: E402
from sv3d_trt.export.quantize import (  # noqa: E402
    excluded_nodes,
    load_calibration,
    quantize_graph,
    quantize_step_graph,
    step_errors,
)


def test_calibration_set_round_trip(export_fp32, tiny_step):
    GENERATIONS, STEPS = tiny_step["generations"], tiny_step["steps"]
    calib = load_calibration(export_fp32 / CALIBRATION_PATH, export_fp32 / "denoise_step.onnx")
    assert len(calib) == GENERATIONS * STEPS
    assert calib.feeds["x"].shape == (GENERATIONS * STEPS, 3, 4, 8, 8)
    assert calib.feeds["sigma"][:STEPS, 0].tolist() == sorted(calib.feeds["sigma"][:STEPS, 0], reverse=True)
    assert np.std(calib.feeds["x"]) > 0.1
    train, held = calib.split()
    assert set(held.generation.tolist()) == {GENERATIONS - 1} and len(held) == STEPS
    assert GENERATIONS - 1 not in train.generation and len(train) + len(held) == len(calib)


def _write(path, samples, generation=None, step=None):
    n = len(samples)
    save_calibration(path, samples, generation if generation is not None else [0] * n, step if step is not None else list(range(n)))


def test_calibration_set_is_checked_against_the_graph(export_fp32, tmp_path, tiny_step):
    graph = export_fp32 / "denoise_step.onnx"
    rng = np.random.default_rng(0)
    good = [tiny_step["feeds"](rng, 3.0, 2.0) for _ in range(2)]
    _write(tmp_path / "ok.npz", good)
    with pytest.raises(StaleEngineError, match="holds one generation"):
        load_calibration(tmp_path / "ok.npz", graph).split()

    wrong_shape = [dict(f, x=f["x"][:2]) for f in good]
    _write(tmp_path / "shape.npz", wrong_shape)
    with pytest.raises(StaleEngineError, match=r"'x' has shape \(2, 2, 4, 8, 8\), expected \(2, 3, 4, 8, 8\)"):
        load_calibration(tmp_path / "shape.npz", graph)

    missing = [{k: v for k, v in f.items() if k != "vector"} for f in good]
    _write(tmp_path / "missing.npz", missing)
    with pytest.raises(StaleEngineError, match="missing input 'vector'"):
        load_calibration(tmp_path / "missing.npz", graph)

    bad = [dict(f) for f in good]
    bad[1]["sigma"] = np.array([np.inf], np.float32)
    bad[0]["unused"] = bad[1]["unused"] = np.ones(2)
    _write(tmp_path / "bad.npz", bad)
    with pytest.raises(StaleEngineError, match=r"'sigma' has non-finite values; arrays \['unused'\] are not inputs"):
        load_calibration(tmp_path / "bad.npz", graph)

    with pytest.raises(StaleEngineError, match=r"not found.*`sv3d-trt export \.\.\. --calibrate`"):
        load_calibration(tmp_path / "absent.npz", graph)


def test_layer_choice(export_fp32):
    model = onnx.shape_inference.infer_shapes(onnx.load(str(export_fp32 / "denoise_step.onnx")))
    int8 = excluded_nodes(model, Precision.INT8)
    fp8 = excluded_nodes(model, Precision.FP8)
    assert int8["/conv_in/Conv"].startswith("first layer") and int8["/emb/emb.0/Gemm"].startswith("first layer")
    assert int8["/conv_out/Conv"].startswith("last layer")
    assert int8["/emb/emb.2/Gemm"].startswith("conditioning GEMM")
    assert int8["/MatMul"].startswith("attention") and int8["/MatMul_1"].startswith("attention")
    assert set(int8) - set(fp8) == {"/MatMul", "/MatMul_1"}  # fp8 keeps attention quantized
    for kept in ("/conv1/Conv", "/to_q/MatMul", "/to_out/MatMul", "/ff1/MatMul", "/ff2/MatMul"):
        assert kept not in int8


def _dq_fed(model) -> set[str]:
    produced = {o: n.op_type for n in model.graph.node for o in n.output}
    return {n.name for n in model.graph.node if any(produced.get(i) == "DequantizeLinear" for i in n.input)}


@pytest.mark.parametrize("precision", [Precision.INT8, Precision.FP8])
def test_quantized_step_graph_error_vs_fp32(export_fp32, tmp_path, precision, tiny_step):
    GENERATIONS, STEPS = tiny_step["generations"], tiny_step["steps"]
    source = export_fp32 / "denoise_step.onnx"
    before = sha256_file(source)
    dest = tmp_path / f"denoise_step.{precision.value}.onnx"
    report = quantize_step_graph(source, dest, precision, error_samples=STEPS)
    assert sha256_file(source) == before  # the export is never modified
    assert sorted(p.name for p in tmp_path.iterdir()) == [dest.name]  # no scratch files left

    quantized = onnx.load(str(dest))
    fed = _dq_fed(quantized)
    assert not fed & set(report["excluded_nodes"])
    assert {"/conv1/Conv", "/to_q/MatMul", "/ff2/MatMul"} <= fed
    assert ("/MatMul" in fed) == (precision == Precision.FP8)

    errors = report["step_errors"]
    assert [e["step"] for e in errors] == list(range(STEPS))
    assert all(e["generation"] == GENERATIONS - 1 for e in errors)
    # Non-trivial (the Q/DQ really changed the arithmetic) and small.
    assert all(1e-6 < e["rel_error"] < 0.02 for e in errors)
    assert all(1e-5 < e["rel_error_update"] < 0.1 for e in errors)


def test_step_errors_of_identical_graphs_is_zero(export_fp32):
    calib = load_calibration(export_fp32 / CALIBRATION_PATH, export_fp32 / "denoise_step.onnx")
    graph = export_fp32 / "denoise_step.onnx"
    errors = step_errors(graph, graph, calib.subset(np.arange(2)))
    assert [e["rel_error"] for e in errors] == [0.0, 0.0]


def test_quantize_refuses_float_precision(export_fp32, tmp_path):
    calib = load_calibration(export_fp32 / CALIBRATION_PATH, export_fp32 / "denoise_step.onnx")
    with pytest.raises(ValueError, match="fp16 is not a quantized precision"):
        quantize_graph(export_fp32 / "denoise_step.onnx", tmp_path / "q.onnx", Precision.FP16, calib)

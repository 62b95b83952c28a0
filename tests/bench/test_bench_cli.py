"""Smoke test of `sv3d-trt bench` on the tiny config: JSON schema, every figure positive and
finite, the plot written. Not a timing assertion. One bench run serves every check."""
from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from sv3d_trt.cli import main
from sv3d_trt.runtime.backend import REGISTRY

# ort runs whenever it is registered (the bench exports the random checkpoint to ONNX itself).
BACKENDS = ["torch-eager"] + (["ort"] if "ort" in REGISTRY else []) + ["tensorrt"]
STAGES = {"encode", "prepare", "step", "denoise", "end_to_end"}


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    result = CliRunner().invoke(main, [
        "bench", "--config", "tiny", "--backends", ",".join(BACKENDS), "--steps", "2", "--warmup", "0",
        "--iters", "2", "--loop-iters", "1", "--decode-chunks", "7,21",
        "--json", str(out / "bench.json"), "--plot", str(out / "bench.png"), "--markdown", str(out / "bench.md"),
    ])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output, json.loads((out / "bench.json").read_text()), out / "bench.png"


def test_markdown_table(bench_run):
    _, report, plot = bench_run
    lines = (plot.parent / "bench.md").read_text().splitlines()
    ran = [b["name"] for b in report["backends"] if b["status"] == "ok"]
    assert lines[0] == "| stage | GFLOP | " + " | ".join(ran) + " |"
    assert {line.split(" | ")[0][2:] for line in lines[2:] if line.startswith("| ")} >= STAGES
    assert any(line.startswith("tensorrt: skipped") for line in lines)


def _numbers(obj, path=""):
    """(path, value) of every number in a JSON tree (bools excluded)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield path, obj


def test_json_schema(bench_run):
    _, report, _ = bench_run
    assert report["schema"] == "sv3d-trt-bench" and report["schema_version"] == 1
    assert {"settings", "machine", "peaks", "flops", "backends", "created"} <= set(report)
    assert report["settings"]["config"] == "tiny" and report["settings"]["steps"] == 2
    assert report["machine"]["cpu_count"] >= 1 and report["machine"]["versions"]["torch"]
    assert [b["name"] for b in report["backends"]] == BACKENDS


def test_every_backend_that_can_run_here_ran(bench_run):
    output, report, _ = bench_run
    rows = {b["name"]: b for b in report["backends"]}
    for name in BACKENDS[:-1]:
        row = rows[name]
        assert row["status"] == "ok", row["reason"]
        assert STAGES <= set(row["stages"]), row["stages"].keys()
        assert any(s.startswith("decode_") for s in row["stages"])
        assert row["stages"]["step"]["iters"] == 2 and row["stages"]["denoise"]["iters"] == 1
        assert row["stages"]["step"]["achieved_tflops"] > 0
    assert set(rows["torch-eager"]["stages"]) == STAGES | {"decode_7", "decode_21"}
    # An engine backend on a CPU run is reported as skipped with its reason, not dropped.
    assert rows["tensorrt"]["status"] == "skipped" and "CUDA" in rows["tensorrt"]["reason"]
    assert "tensorrt: skipped" in output


def test_every_figure_is_positive_and_finite(bench_run):
    _, report, _ = bench_run
    figures = list(_numbers({k: report[k] for k in ("peaks", "flops")}))
    for row in report["backends"]:
        if row["status"] == "ok":
            figures += list(_numbers({k: row[k] for k in ("stages", "memory", "load_seconds")}, row["name"]))
    assert len(figures) > 50
    bad = [(p, v) for p, v in figures if not (math.isfinite(v) and v > 0)]
    assert not bad


@pytest.mark.skipif("ort" not in REGISTRY, reason="ort backend not registered")
def test_onnx_graph_flops_agree_with_module_flops(bench_run):
    # Two independent counters: FlopCounterMode on the modules, shape inference on the graphs.
    _, report, _ = bench_run
    ref = report["flops"]
    ort = next(b for b in report["backends"] if b["name"] == "ort")
    graph = ort["artifacts"]["graph_flops"]
    assert graph["clip"] == ref["clip"]
    assert graph["vae_encoder"] == ref["vae_encode"]
    assert graph["context"] == ref["context"]
    assert graph["vae_decoder"] == ref["decode"] * ort["settings"]["decode_chunk"] // 21
    # The exported step is the folded one; export also constant-folds work on constant inputs.
    assert 0.95 * ref["step_folded"] <= graph["denoise_step"] <= ref["step_folded"]
    assert ort["artifacts"]["total_bytes"] > 0


def test_plot_is_a_png(bench_run):
    _, _, plot = bench_run
    data = plot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def _run(tmp_path, *args):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(main, ["bench", "--config", "tiny", "--steps", "2", "--warmup", "0", "--iters", "1",
                                       "--loop-iters", "1", "--decode-chunks", "21", "--json", str(out), *args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output, json.loads(out.read_text())


@pytest.mark.slow
def test_mesh_stage(tmp_path):
    output, report = _run(tmp_path, "--backends", "torch-eager", "--mesh", "--mesh-iters", "3")
    mesh = report["mesh"]
    assert mesh["frames_from"] == "torch-eager" and mesh["faces"] > 0
    assert mesh["seconds"]["total"] >= sum(v for k, v in mesh["seconds"].items() if k != "total") > 0
    assert "mesh from torch-eager frames" in output


@pytest.mark.gpu
def test_cuda_run_uses_events_and_reports_gpu_memory(tmp_path):
    _, report = _run(tmp_path, "--backends", "torch-eager", "--device", "cuda")
    row = report["backends"][0]
    assert row["status"] == "ok" and row["timing_method"] == "cuda-events"
    assert row["memory"]["gpu_torch_peak_allocated_bytes"] > 0
    assert report["machine"]["gpu"]["name"] and report["peaks"]["matmul_dtype"] == "fp16"

"""`sv3d-trt bench --html`: one self-contained page from a real (tiny, 2-step) bench run:
the side-by-side table, per-stage bars per backend with the FLOP floor, machine, memory."""
from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from sv3d_trt.bench.flops import stage_flops_key
from sv3d_trt.bench.report import format_seconds, to_html
from sv3d_trt.cli import main


@pytest.fixture(scope="module")
def bench_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_html")
    result = CliRunner().invoke(main, [
        "bench", "--config", "tiny", "--backends", "torch-eager,tensorrt", "--steps", "2", "--warmup", "0",
        "--iters", "2", "--loop-iters", "1", "--decode-chunks", "21",
        "--json", str(out / "bench.json"), "--html", str(out / "bench.html")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return json.loads((out / "bench.json").read_text()), out / "bench.html"


def test_html_is_the_json_report(bench_report):
    report, path = bench_report
    page = path.read_text()
    assert page == to_html(report)
    assert "<script" not in page and "src=" not in page and "href=" not in page  # nothing outside the file


def test_table_bars_floor_machine(bench_report):
    report, path = bench_report
    page = path.read_text()
    eager = report["backends"][0]
    assert eager["name"] == "torch-eager" and eager["status"] == "ok"
    # One chart per stage, one bar per backend that ran, a floor line wherever the stage has FLOPs.
    charts = re.findall(r'<div class="stage"><h3>([^<]+)</h3>(.*?)</svg></div>', page, re.S)
    assert [name for name, _ in charts] == list(eager["stages"])
    for name, svg in charts:
        assert svg.count("<rect ") == 1
        median = eager["stages"][name]["median_ms"] / 1e3
        assert f"<title>torch-eager: {format_seconds(median)}</title>" in svg
        flops = report["flops"].get(stage_flops_key(name))
        if flops:
            floor = flops / (report["peaks"]["matmul_tflops"] * 1e12)
            assert f"FLOP floor {format_seconds(floor)}" in svg
            assert floor < median  # nothing beats the measured peak
    assert sum('class="floor"' in svg for _, svg in charts) >= 3  # encode, step, denoise, end_to_end, decode have FLOPs
    tflops = eager["stages"]["step"]["achieved_tflops"]
    assert f"{1e3 * tflops:.3g} GFLOP/s" in page
    assert report["machine"]["cpu"] in page and f"{report['peaks']['matmul_tflops']:.3g} TFLOP/s" in page
    assert "tensorrt: skipped: " in page  # a backend that cannot run here is listed with its reason
    assert "peak host RSS" in page and 'id="memory"' in page


def test_opens_in_chromium_with_no_errors(bench_report, open_page):
    _, path = bench_report
    opened = open_page(path, size=(1400, 1000))
    assert opened.page.locator("#table tbody tr").count() >= 6
    assert opened.page.locator("svg.bars").count() >= 6
    assert opened.errors == []


def test_two_backends_side_by_side(bench_report):
    """Rendering only: the CPU report with a second, faster row added (as a GPU run has)."""
    import copy

    report, _ = bench_report
    report = copy.deepcopy(report)
    fast = copy.deepcopy(report["backends"][0])
    fast.update(name="tensorrt", status="ok", reason=None)
    fast["memory"] = {**fast["memory"], "gpu_device_peak_used_bytes": 3 * 2**30}
    for fig in fast["stages"].values():
        for key in ("median_ms", "p10_ms", "p90_ms", "mean_ms"):
            fig[key] /= 1e4
        if "achieved_tflops" in fig:
            fig["achieved_tflops"] *= 1e4
        fig["speedup_vs_torch_eager"] = 1e4
    report["backends"][1] = fast
    page = to_html(report)
    assert "<th>torch-eager</th><th>tensorrt</th>" in page
    charts = re.findall(r'<div class="stage"><h3>[^<]+</h3>(.*?)</svg></div>', page, re.S)
    assert charts and all(svg.count("<rect ") == 2 for svg in charts)
    assert '<rect class="series-1"' in page and "1e+04x" in page
    step = fast["stages"]["step"]["achieved_tflops"]
    assert step >= 1 and f"{step:.3g} TFLOP/s" in page
    assert "peak GPU (torch / device)" in page and "3.00 GiB" in page
    assert "not run" not in page

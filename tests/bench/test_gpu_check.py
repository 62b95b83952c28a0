"""The GPU bring-up check (bench/gpu/check.py) cannot rot between the rare GPU windows: its CPU
dry run (`--device cpu --config tiny`, kernels on Triton's interpreter) runs every part here,
and the runner's isolation, dependency and budget rules, the kernel-name categories, the junit
parsing and the on-device random init are checked on their own."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from bench.gpu import check, kernel_profile
from bench.gpu.env_parts import parse_junit, run_pytest
from bench.gpu.fullsize import cast_copy, random_module, untouched_tensors
from bench.gpu.report import JSON_NAME, MARKDOWN_NAME
from bench.gpu.runner import Context, Part, PartResult, run_parts
from sv3d_trt.models.checkpoint import PREFIXES, random_tensor
from sv3d_trt.models.config import get_config

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu" / "check.py"
# Parts that must run on a CPU; compile needs --compile, mesh checks CUDA only.
CPU_PARTS = ("versions", "peaks", "pytest_gpu", "build", "eager_step", "fast_fp16", "fast_bf16", "numerics", "loop",
             "decode", "end_to_end", "profile", "kernels")


# Packages the project can use that the GPU machine's image lacks (KINDS.md's package list): the
# dry run runs with them unimportable, so the check cannot come to need one unseen.
NOT_ON_GPU_IMAGE = ("imageio_ffmpeg", "warp", "trimesh", "xatlas", "onnxslim", "onnx_graphsurgeon", "polygraphy",
                    "modelopt", "tensorrt", "tensorrt_rtx", "ray", "fastapi", "multipart", "open_clip", "diffusers",
                    "kornia", "playwright")
_AS_ON_GPU_IMAGE = f"""
import runpy, sys
class Hidden:  # every import finder, blind to the absent packages (find_spec answers None, as there)
    def __init__(self, finder):
        self.finder = finder
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {NOT_ON_GPU_IMAGE!r}:
            return None
        return self.finder.find_spec(name, path, target)
    def __getattr__(self, attr):
        return getattr(self.finder, attr)
sys.meta_path[:] = [Hidden(f) for f in sys.meta_path]
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _run(*args: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _AS_ON_GPU_IMAGE, str(SCRIPT), *args], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **env},
                          timeout=900)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    proc = _run("--device", "cpu", "--config", "tiny", "--out", str(out), "--steps", "2", "--check-steps", "2",
                "--warmup", "0", "--iters", "1", "--loop-iters", "1", "--decode-iters", "1", "--kernel-iters", "1",
                TRITON_INTERPRET="1")
    return proc, json.loads((out / JSON_NAME).read_text()), out


def test_dry_run_runs_every_part(dry_run):
    proc, report, _ = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    parts = report["parts"]
    assert list(parts) == check.PART_NAMES
    for name in CPU_PARTS:
        assert parts[name]["status"] == "ok", (name, parts[name])
        assert parts[name]["summary"] and parts[name]["seconds"] >= 0
    assert parts["compile"] == {**parts["compile"], "status": "skipped", "reason": "needs --compile"}
    assert parts["mesh"]["status"] == "skipped" and "CUDA" in parts["mesh"]["reason"]
    assert report["schema"] == "sv3d-trt-gpu-check" and report["machine"]["versions"]["torch"]


def test_dry_run_numbers(dry_run):
    _, report, _ = dry_run
    parts = report["parts"]
    for name in ("eager_step", "fast_fp16", "fast_bf16"):
        data = parts[name]["data"]
        assert data["timing"]["median_ms"] > 0 and data["finite"] and data["model_tflops"] > 0
    rows = {r["path"]: r for r in parts["numerics"]["data"]["tables"]["step vs fp32"]}
    assert set(rows) == {"torch-eager", "torch-fast-fp16", "torch-fast-bf16"}
    assert rows["torch-eager"]["rel_err_update"] == 0.0  # fp32 on a CPU: the reference itself
    assert 0 < rows["torch-fast-fp16"]["rel_err_update"] <= rows["torch-fast-fp16"]["tolerance"]
    kernels = parts["kernels"]["data"]["tables"]["kernels"]
    assert {r["kernel"] for r in kernels} >= {"temporal_attention", "group_norm temporal", "layer_norm", "geglu",
                                              "blend+residual"}
    assert all(r["ok"] and 0 < r["rel_err"] < 2e-3 for r in kernels)
    profile = parts["profile"]["data"]
    assert profile["total_ms"] > 0 and {r["category"] for r in profile["tables"]["by category"]} >= {"gemm", "conv"}
    tests = parts["pytest_gpu"]["data"]["tests"]
    assert tests and all(t["outcome"] == "skipped" for t in tests)  # no CUDA here: every GPU test skips


def test_dry_run_prints_the_summary_last(dry_run):
    proc, _, out = dry_run
    lines = proc.stdout.rstrip().splitlines()
    table = lines[-len(check.PART_NAMES):]
    assert [line.split()[0] for line in table] == check.PART_NAMES
    assert lines[-len(check.PART_NAMES) - 2].startswith("part ")
    markdown = (out / MARKDOWN_NAME).read_text()
    assert "| fast_fp16 | ok |" in markdown and "**kernels**" in markdown


def test_help_names_the_command_and_what_to_carry(capsys):
    with pytest.raises(SystemExit) as exit_:
        check.parse_args(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    assert check.COMMAND in out and "carry:" in out and "split -b 50M" in out
    for part in check.PARTS:
        assert f"{part.name:<11} {part.estimate_s:>4.0f} s" in out


def test_bad_input_is_one_line(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        check.parse_args(["--out", str(tmp_path), "--only", "nope"])
    assert exit_.value.code == 2 and "unknown part(s) nope" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        check.parse_args(["--out", str(tmp_path), "--steps", "1"])
    assert "--steps must be >= 2" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert check.main(["--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert "no CUDA device" in err and len(err.strip().splitlines()) == 1
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert check.main(["--device", "cpu", "--out", str(blocker / "out")]) == 2
    err = capsys.readouterr().err
    assert "cannot write to --out" in err and len(err.strip().splitlines()) == 1


# ---- runner -------------------------------------------------------------------------------


def _ctx(**options) -> Context:
    return Context(device="cpu", config=None, options=SimpleNamespace(only=None, **options), out=Path("."))


def test_runner_isolates_parts_and_keeps_the_budget():
    ran = []

    def ok(ctx):
        ran.append("ok")
        return PartResult("fine", {"x": 1})

    def boom(ctx):
        raise RuntimeError("CUDA error: an illegal memory access\nmore")

    parts = [
        Part("first", 1, ok, ""),
        Part("boom", 1, boom, ""),
        Part("wrong", 1, lambda ctx: PartResult("ran", problems=["rel err 0.9 > 0.03"]), ""),
        Part("after_boom", 1, ok, "", needs=("boom",)),
        Part("off", 1, ok, "", enabled=lambda ctx: "needs --flag"),
        Part("too_long", 1e6, ok, ""),
        Part("last", 1, ok, "", needs=("first",)),
    ]
    seen = []
    results = run_parts(parts, _ctx(), budget_s=100, on_result=lambda name, r: seen.append(name))
    assert seen == [p.name for p in parts] and ran == ["ok", "ok"]
    status = {name: r["status"] for name, r in results.items()}
    assert status == {"first": "ok", "boom": "failed", "wrong": "failed", "after_boom": "skipped", "off": "skipped",
                      "too_long": "skipped", "last": "ok"}
    assert results["boom"]["reason"] == "RuntimeError: CUDA error: an illegal memory access"
    assert any("boom" in line for line in results["boom"]["traceback"])
    assert results["wrong"]["reason"] == "rel err 0.9 > 0.03"
    assert results["after_boom"]["reason"] == "needs part 'boom', which is failed"
    assert results["off"]["reason"] == "needs --flag"
    assert results["too_long"]["reason"].startswith("budget: ")


def test_only_selects_parts():
    ctx = _ctx()
    ctx.options.only = ["b"]
    results = run_parts([Part("a", 0, lambda c: PartResult("a"), ""), Part("b", 0, lambda c: PartResult("b"), "")],
                        ctx, budget_s=10)
    assert results["a"]["reason"] == "not selected (--only)" and results["b"]["status"] == "ok"


# ---- pieces -------------------------------------------------------------------------------


@pytest.mark.parametrize("name,expected", [
    ("sm90_xmma_gemm_f16f16_f16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_segment_k_off", "gemm"),
    ("nvjet_hsh_256x128_64x4_1x2_h_bz_coopA_NNT", "gemm"),
    ("sm90_xmma_fprop_implicit_gemm_f16f16_f16f32_f32_nhwckrsc_nhwc_tilesize128x128x64", "conv"),
    ("void cudnn::engines_precompiled::nchwToNhwcKernel<__half, __half, float, false, true>", "copies/layout"),
    ("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128, 128, 4>>", "attention"),
    ("_temporal_attention_fwd", "attention"),
    ("_group_norm_fwd", "norms"),
    ("void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<c10::Half, float>", "norms"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<c10::Half>>", "elementwise"),
    ("void at::native::elementwise_kernel<128, 4, at::native::direct_copy_kernel_cuda>", "copies/layout"),
    ("Memcpy DtoD (Device -> Device)", "copies/layout"),
    ("_geglu_fwd", "elementwise"),
    ("aten::addmm", "gemm"),
    ("aten::mkldnn_convolution", "conv"),
    ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"),
    ("aten::native_group_norm", "norms"),
    ("aten::copy_", "copies/layout"),
    ("aten::mul", "elementwise"),
    ("some_new_kernel", "other"),
])
def test_kernel_categories(name, expected):
    assert kernel_profile.category(name) == expected


def test_parse_junit(tmp_path):
    xml = tmp_path / "j.xml"
    xml.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.kernels.test_blend" name="test_cuda[fp16]" time="1"/>'
        '<testcase classname="tests.runtime.test_torch_fast" name="test_graph" time="1">'
        '<failure message="AssertionError: 0.5 &gt; 0.02">long text</failure></testcase>'
        '<testcase classname="tests.bench.test_bench_cli" name="test_x" time="0">'
        '<skipped type="pytest.skip" message="needs a CUDA GPU"/></testcase>'
        '</testsuite></testsuites>')
    assert parse_junit(xml) == [
        {"id": "tests/kernels/test_blend.py::test_cuda[fp16]", "outcome": "passed", "message": ""},
        {"id": "tests/runtime/test_torch_fast.py::test_graph", "outcome": "failed", "message": "AssertionError: 0.5 > 0.02"},
        {"id": "tests/bench/test_bench_cli.py::test_x", "outcome": "skipped", "message": "needs a CUDA GPU"},
    ]


def test_random_module_draws_every_tensor():
    cfg = get_config("tiny")
    unet = random_module("unet", cfg, "cpu", seed=3)
    assert untouched_tensors(unet) == []
    state = unet.state_dict()
    gains = [t for k, t in state.items() if k.endswith("norm.weight") or k.endswith("norm1.weight")]
    assert gains and all(abs(float(t.mean()) - 1) < 0.1 for t in gains)  # norm gains around 1
    weight = state["input_blocks.1.0.in_layers.2.weight"]  # a 3x3 conv: fan-in scaled
    assert math.isclose(float(weight.std()) * math.sqrt(weight[0].numel()), 1.0, rel_tol=0.1)
    for component, module in (("unet", unet), ("clip", random_module("clip", cfg, "cpu", seed=4))):
        for key, t in module.state_dict().items():  # the scales of the checkpoint maker's random_tensor
            if t.numel() >= 1024:
                ref = random_tensor(PREFIXES[component] + key, tuple(t.shape), seed=0)
                assert math.isclose(float(t.std()), float(ref.std()), rel_tol=0.15), key
    half = cast_copy(unet, "unet", cfg, "fp16")
    assert all(t.dtype == torch.float16 for t in half.state_dict().values())
    torch.testing.assert_close(half.state_dict()["out.2.weight"], state["out.2.weight"].half())
    with torch.no_grad():
        unet.out[2].bias.zero_()
    assert untouched_tensors(unet) == ["out.2.bias"]


def test_pytest_part_stops_a_long_run_and_keeps_what_ran(tmp_path):
    tests = tmp_path / "test_sample.py"
    tests.write_text("import time\n\ndef test_fast():\n    pass\n\ndef test_fails():\n    assert 1 == 2\n\n"
                     "def test_hangs():\n    time.sleep(120)\n")
    result = run_pytest([str(tests)], tmp_path, tmp_path, timeout=15, test_timeout=300)
    outcomes = {t["id"].rsplit("::", 1)[1]: t["outcome"] for t in result.data["tests"]}
    assert outcomes["test_fast"] == "passed" and outcomes["test_fails"] == "failed"
    assert result.data["timed_out"] and any("stopped after 15 s" in p for p in result.problems)
    assert any("test_fails" in p for p in result.problems)


@pytest.mark.mesh
def test_mesh_part_runs_on_cpu(tmp_path):
    """The mesh part runs on CUDA only in the check (where Warp is carried); its calls into the mesh
    stage are exercised here on a CPU with 2 fit steps, so they cannot rot unseen."""
    pytest.importorskip("warp")
    from bench.gpu.env_parts import mesh

    ctx = Context(device="cpu", config=None, options=SimpleNamespace(mesh_iters=2, only=None), out=tmp_path)
    result = mesh(ctx)
    assert result.problems == [] and result.data["faces"] > 0 and result.data["psnr"] >= 25

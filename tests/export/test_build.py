"""`sv3d-trt build` with TensorRT-RTX on the CPU: fp16 / int8 / fp8 engines for sm89, the clear
refusals, the progress monitor and the atomic engine write."""
from __future__ import annotations

import json
import logging
import shutil
import signal
import subprocess
import sys
import time

import onnx
import pytest
from click.testing import CliRunner

from sv3d_trt.cli import main
from sv3d_trt.errors import BackendUnavailableError, StaleEngineError
from sv3d_trt.export import build
from sv3d_trt.export.build import RTXEngineBuilder, build_engines, save_engine
from sv3d_trt.contract.manifest import MANIFEST_NAME, load_manifest, verify_engines
from sv3d_trt.contract.tensorrt import import_tensorrt, logger_class


def test_fp16_engines_and_manifest(built_fp16, export_fp16):
    manifest = verify_engines(built_fp16)
    assert manifest.backend == "tensorrt-rtx" and manifest.targets == ["sm89"]
    assert manifest.precision.value == "fp16" and manifest.variant == "sv3d_p"
    assert set(manifest.engines) == {"clip", "denoise_step"}
    step = manifest.engines["denoise_step"]
    assert (built_fp16 / "denoise_step.engine").stat().st_size == step["bytes"] > 100_000
    names = [t["name"] for t in step["inputs"]]
    assert names == ["x", "sigma", "sigma_next", "concat", "vector", "cfg_scale", "attn_ctx"]
    assert step["inputs"][0] == {"name": "x", "shape": [3, 4, 8, 8], "dtype": "float16"}
    assert step["outputs"] == [{"name": "out", "shape": [3, 4, 8, 8], "dtype": "float16"}]
    assert manifest.data["export"]["checkpoint_sha256"] == "ab" * 32
    # RTX timing caches are no-ops: no cache file is written beside the engines.
    assert sorted(p.name for p in built_fp16.iterdir()) == ["clip.engine", "denoise_step.engine", MANIFEST_NAME]


@pytest.mark.parametrize("precision", ["int8", "fp8"])
def test_quantized_engines_sm89(rtx, export_fp16, tmp_path, precision):
    manifest = build_engines(export_fp16, tmp_path, backend=rtx, precision=precision, targets=["sm89"], error_samples=2)
    step = manifest.engines["denoise_step"]
    assert step["precision"] == precision and manifest.engines["clip"]["precision"] == "fp16"
    quantized = onnx.load(str(tmp_path / step["built_from"]["file"]))
    q_types = {
        i.type.tensor_type.elem_type for i in quantized.graph.value_info
    } | {t.data_type for t in quantized.graph.initializer}
    low = onnx.TensorProto.INT8 if precision == "int8" else onnx.TensorProto.FLOAT8E4M3FN
    assert low in q_types
    assert sum(n.op_type == "QuantizeLinear" for n in quantized.graph.node) >= 6
    errors = step["quantization"]["step_errors"]
    assert len(errors) == 2 and all(0 < e["rel_error"] < 0.05 for e in errors)
    verify_engines(tmp_path)


def test_int8_without_a_calibration_set_says_how_to_record_it(rtx, export_fp16, tmp_path):
    onnx_dir, engines = tmp_path / "onnx", tmp_path / "engines"
    shutil.copytree(export_fp16, onnx_dir, ignore=shutil.ignore_patterns("calibration"))
    info = json.loads((onnx_dir / "export.json").read_text())
    (onnx_dir / "export.json").write_text(json.dumps({**info, "checkpoint": "/ck/my sv3d.safetensors", "decode_chunk": 7}))
    r = CliRunner().invoke(main, ["build", "--onnx", str(onnx_dir), "--out", str(engines), "--backend", rtx,
                                  "--precision", "int8", "--target", "sm89"])
    assert r.exit_code == 1, r.output
    assert r.output.startswith("error: an int8 build calibrates the denoise step")
    command = f"sv3d-trt export --checkpoint '/ck/my sv3d.safetensors' --out {onnx_dir} --precision fp16 --decode-chunk 7"
    assert r.output.splitlines()[-1] == f"  {command} --calibrate"
    assert not list(engines.glob("*.engine"))  # refused before any engine is built


def test_fp8_on_sm86_is_refused_clearly(rtx, export_fp16, tmp_path):
    with pytest.raises(BackendUnavailableError, match=r"fp8 is not supported on sm86.*sm89, sm120, sm121"):
        build_engines(export_fp16, tmp_path, backend=rtx, precision="fp8", targets=["sm86", "sm89"])
    assert not list(tmp_path.glob("*.engine"))


def test_unknown_and_hopper_targets(rtx):
    trt = import_tensorrt(rtx)
    with pytest.raises(BackendUnavailableError, match="Hopper.*--backend tensorrt"):
        RTXEngineBuilder(trt, targets=["sm90"])
    with pytest.raises(BackendUnavailableError, match="cannot target sm70"):
        RTXEngineBuilder(trt, targets=["7.0"])


def test_precision_must_match_export(rtx, export_fp16, tmp_path):
    with pytest.raises(StaleEngineError, match="--precision fp32"):
        build_engines(export_fp16, tmp_path, backend=rtx, precision="fp32", targets=["sm89"])


def test_parse_failure_carries_tensorrt_errors(rtx, tmp_path):
    trt = import_tensorrt(rtx)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx protobuf at all")
    with pytest.raises(BackendUnavailableError, match=r"cannot parse .*bad.onnx; tensorrt-rtx .* said:\n  \S"):
        RTXEngineBuilder(trt, targets=["sm89"]).build(bad)


def test_dynamic_shapes_refused(rtx, tiny_clip_dynamic):
    with pytest.raises(StaleEngineError, match=r"dynamic input shapes \(image\[-1, 3, 16, 16\]\)"):
        RTXEngineBuilder(import_tensorrt(rtx), targets=["sm89"]).build(tiny_clip_dynamic)


class RecordingProgress:
    """Stands in for rich.progress.Progress."""

    def __init__(self):
        self.tasks, self.live, self.updates = {}, set(), 0

    def add_task(self, description, total):
        task = len(self.tasks)
        self.tasks[task] = (description, total)
        self.live.add(task)
        return task

    def update(self, task, completed):
        assert task in self.live and 0 < completed <= self.tasks[task][1]
        self.updates += 1

    def remove_task(self, task):
        self.live.remove(task)


def test_progress_monitor_sees_build_phases(rtx, export_fp16):
    progress = RecordingProgress()
    RTXEngineBuilder(import_tensorrt(rtx), targets=["sm89"], progress=progress).build(export_fp16 / "clip.onnx")
    descriptions = [d for d, _ in progress.tasks.values()]
    assert "Building engine" in descriptions and any(d.startswith("  ") for d in descriptions)
    assert progress.updates > 10 and not progress.live  # every phase finished


def test_interrupted_write_leaves_no_half_engine(built_fp16, tmp_path, monkeypatch):
    engines = tmp_path / "engines"
    shutil.copytree(built_fp16, engines)
    old = (engines / "clip.engine").read_bytes()

    def crash_halfway(f, plan):
        f.write(plan[: plan.nbytes // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "_write_chunks", crash_halfway)
    plan = memoryview(b"\x01" * 4096)
    with pytest.raises(KeyboardInterrupt):
        save_engine(plan, engines / "clip.engine")
    with pytest.raises(KeyboardInterrupt):
        save_engine(plan, engines / "new.engine")
    assert (engines / "clip.engine").read_bytes() == old  # the previous engine survives whole
    assert not (engines / "new.engine").exists()
    assert sorted(p.name for p in engines.iterdir()) == ["clip.engine", "denoise_step.engine", MANIFEST_NAME]


def test_interrupted_rebuild_keeps_the_previous_engines_usable(rtx, export_fp16, built_fp16, tmp_path, monkeypatch):
    """A rebuild is staged beside the folder: one that dies midway leaves the old engines and
    their manifest in place, still verifying, and no staging folder behind."""
    engines = tmp_path / "engines"
    shutil.copytree(built_fp16, engines)
    before = {p.name: p.read_bytes() for p in engines.iterdir()}

    def crash(f, plan):
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "_write_chunks", crash)
    with pytest.raises(KeyboardInterrupt):
        build_engines(export_fp16, engines, backend=rtx, targets=["sm89"])
    assert {p.name: p.read_bytes() for p in engines.iterdir()} == before
    assert set(verify_engines(engines).engines) == {"clip", "denoise_step"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["engines"]


_SLOW_BUILD = """
import sys, time
from sv3d_trt.cli import main
from sv3d_trt.contract.tensorrt import import_tensorrt
from sv3d_trt.export import build

Monitor = build._progress_class(import_tensorrt("tensorrt-rtx"))
start, step = Monitor.phase_start, Monitor.step_complete

def phase_start(self, *args):
    print("BUILDING", flush=True)  # the progress has started: the parent presses Ctrl-C now
    return start(self, *args)

def slow_step(self, *args):
    time.sleep(0.05)  # a tiny graph builds in a blink; a real one takes minutes
    return step(self, *args)

Monitor.phase_start, Monitor.step_complete = phase_start, slow_step
main(sys.argv[1:])
"""


def test_one_ctrl_c_cancels_a_build_promptly(rtx, export_fp16, built_fp16, tmp_path):
    """SIGINT to a real `sv3d-trt build` child once TensorRT reports progress: it stops within
    seconds with a non-zero exit, and the folder it was rebuilding still verifies."""
    engines = tmp_path / "engines"
    shutil.copytree(built_fp16, engines)
    child = subprocess.Popen([sys.executable, "-c", _SLOW_BUILD, "build", "--onnx", str(export_fp16), "--out",
                              str(engines), "--backend", rtx, "--target", "sm89"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert child.stdout.readline().strip() == "BUILDING"
        child.send_signal(signal.SIGINT)
        start = time.monotonic()
        output = child.communicate(timeout=60)[0]
        stopped_after = time.monotonic() - start
    finally:
        child.kill()
    assert child.returncode not in (0, None), output
    assert stopped_after < 10, f"took {stopped_after:.1f} s to stop"
    assert "Traceback" not in output
    assert set(verify_engines(engines).engines) == {"clip", "denoise_step"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["engines"]


def test_ctrl_c_inside_the_logger_callback_is_kept(rtx, monkeypatch):
    """A KeyboardInterrupt raised while TensorRT's logger callback runs cannot propagate through
    TensorRT's C++ caller; the logger keeps it and the build re-raises it once TensorRT returns."""
    trt = import_tensorrt(rtx)
    logger = logger_class(trt)()

    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(logging.getLogger("sv3d_trt.tensorrt"), "warning", interrupt)
    logger.log(trt.ILogger.Severity.WARNING, "a warning while Ctrl-C is pressed")  # does not raise
    assert logger.interrupted
    with pytest.raises(KeyboardInterrupt):
        build.Cancellation().check(logger)


def test_cli_build_and_verify(rtx, export_fp16, tmp_path):
    out = tmp_path / "eng"
    runner = CliRunner()
    result = runner.invoke(main, ["build", "--onnx", str(export_fp16), "--out", str(out),
                                  "--backend", "tensorrt-rtx", "--precision", "fp16", "--target", "sm89"])
    assert result.exit_code == 0, result.output
    assert "denoise_step: fp16" in result.output and "sm89" in result.output
    assert json.loads((out / MANIFEST_NAME).read_text())["targets"] == ["sm89"]
    result = runner.invoke(main, ["verify", str(out)])
    assert result.exit_code == 0 and result.output.startswith("ok: 2 engines")
    (out / "clip.engine").write_bytes(b"garbage")
    result = runner.invoke(main, ["verify", str(out)])
    assert result.exit_code == 1 and "clip: engine" in result.output and "sv3d-trt build --onnx" in result.output


def test_full_tensorrt_refuses_cross_builds():
    trt = pytest.importorskip("tensorrt", reason="full TensorRT comes from NVIDIA's index; not installed here")
    if build.local_compute_capability() is None:
        pytest.skip("full TensorRT builds need a GPU")
    with pytest.raises(BackendUnavailableError, match="cross-architecture builds need --backend tensorrt-rtx"):
        build.make_builder(trt, ["sm75", "sm121"], None)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp16", "int8", "fp8"])
def test_real_tiny_export_builds(rtx, tmp_path_factory, precision):
    """The acceptance chain on the real graphs: make-checkpoint tiny -> export (fp16, with its
    calibration set) -> build for sm89 -> verify. Minutes on 2 cores, hence slow."""
    from functools import partial

    from sv3d_trt.export.onnx_export import export_checkpoint
    from sv3d_trt.models.checkpoint import make_checkpoint
    from sv3d_trt.runtime.calibration import record_calibration

    root = tmp_path_factory.getbasetemp() / "real_tiny"
    onnx_dir = root / "onnx"
    if not (onnx_dir / "export.json").is_file():
        checkpoint = make_checkpoint(root / "ck.safetensors", "tiny", "sv3d_p", seed=0)
        export_checkpoint(checkpoint, onnx_dir, precision="fp16",
                          calibrate=partial(record_calibration, checkpoint, steps=8))
    manifest = build_engines(onnx_dir, root / precision, backend=rtx, precision=precision, targets=["sm89"])
    assert set(manifest.engines) == {"clip", "vae_encoder", "vae_decoder", "context", "denoise_step"}
    assert manifest.engines["denoise_step"]["precision"] == precision
    verify_engines(root / precision)

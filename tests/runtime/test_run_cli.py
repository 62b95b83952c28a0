"""`sv3d-trt run` and the batch runner: several images per call, run.json, failures that keep
the other images' outputs, the fp32 fallback, backend choice by artifact."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sv3d_trt.cli import main
from sv3d_trt.errors import BackendUnavailableError, NumericsError, StaleEngineError
from sv3d_trt.preprocess import example_image_path
from sv3d_trt.runtime import artifacts
from sv3d_trt.runtime.artifacts import choose_backend, require_installed
from sv3d_trt.runtime.batch import BatchRunner, RunSettings, failure_message, is_out_of_memory, output_names
from sv3d_trt.runtime.pipeline import Result

FRAME_FILES = [f"frame_{i:03d}.png" for i in range(21)]


def _outputs(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


def test_run_two_images_from_an_export(tiny_onnx_dir, tmp_path):
    mug, toy = example_image_path("mug"), example_image_path("toy")
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["run", str(mug), str(toy), "--onnx", str(tiny_onnx_dir), "--out", str(out),
                                  "--steps", "2", "--seed", "5"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["mug_rgba", "toy_rgb"]  # nothing partial left
    for name in ("mug_rgba", "toy_rgb"):
        files = _outputs(out / name)
        assert set(FRAME_FILES) | {"orbit.mp4", "orbit.gif", "cameras.json", "input.png", "run.json", "index.html"} == files
        info = json.loads((out / name / "run.json").read_text())
        assert info["settings"]["steps"] == 2 and info["settings"]["seed"] == 5
        assert info["settings"]["decode_chunk"] == info["backend"]["decode_chunk"] == 7  # the export's, not 14
        assert info["backend"]["backend"] == "ort" and info["noise_source"]
        assert set(info["timings_s"]) == {"encode", "denoise", "decode", "save"}
        assert info["versions"]["sv3d_trt"]
    assert "denoise" in r.output and "ok" in r.output


def test_failing_image_keeps_the_others(tiny_onnx_dir, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image at all")
    out = tmp_path / "out"
    (out / "mug_rgba").mkdir(parents=True)
    (out / "mug_rgba" / "stale.txt").write_text("from an older run")  # replaced as a whole
    (out / "mug_rgba" / "run.json").write_text("{}")  # it is an earlier result (else it is refused, kept)
    r = CliRunner().invoke(main, ["run", str(example_image_path("mug")), str(bad), "--onnx", str(tiny_onnx_dir),
                                  "--out", str(out), "--steps", "2"])
    assert r.exit_code == 1
    assert "1 of 2 image(s) failed" in r.output and "broken.png" in r.output
    assert sorted(p.name for p in out.iterdir()) == ["mug_rgba"]  # no broken/ and no staging dirs
    assert "run.json" in _outputs(out / "mug_rgba") and "stale.txt" not in _outputs(out / "mug_rgba")


def test_run_needs_exactly_one_source(tiny_onnx_dir, tiny_checkpoint, tmp_path):
    r = CliRunner().invoke(main, ["run", str(example_image_path("mug")), "--out", str(tmp_path)])
    assert r.exit_code != 0 and "exactly one of" in r.output
    r = CliRunner().invoke(main, ["run", str(example_image_path("mug")), "--onnx", str(tiny_onnx_dir),
                                  "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path)])
    assert r.exit_code != 0 and "exactly one of" in r.output


def test_forcing_an_engine_backend_on_an_export_names_the_build(tiny_onnx_dir, tmp_path):
    r = CliRunner().invoke(main, ["run", str(example_image_path("mug")), "--onnx", str(tiny_onnx_dir),
                                  "--backend", "tensorrt-rtx", "--out", str(tmp_path)])
    assert r.exit_code == 1 and "sv3d-trt build --onnx" in r.output


# ---- the batch runner with stand-in pipelines ---------------------------------------------


class _Backend:
    name = "fake"
    device = "cpu"

    def describe(self):
        return {"backend": self.name}


class _Pipeline:
    """Generates a fixed orbit, or raises `error` (once per call) — no model needed."""

    variant = "sv3d_p"

    def __init__(self, error: Exception | None = None):
        self.backend = _Backend()
        self.error = error
        self.calls = 0

    def close(self):
        self.closed = True

    def generate(self, image, **kwargs):
        self.calls += 1
        if self.error is not None:
            raise self.error
        rng = np.random.default_rng(self.calls)
        frames = rng.integers(0, 255, (21, 16, 16, 3), dtype=np.uint8)
        return Result(frames=frames, latent=np.zeros((21, 4, 2, 2), np.float32), orbit=None,
                      cameras={"frames": [{} for _ in range(21)]}, input_rgb=frames[-1], seed=kwargs["seed"],
                      timings={"denoise": 0.5}, noise_source="numpy-philox")


def test_fp32_fallback_reruns_non_finite_images(tmp_path):
    fp16 = _Pipeline(NumericsError("the latent became non-finite in denoise step 7/50"))
    fp32 = _Pipeline()
    built = []
    runner = BatchRunner(fp16, RunSettings(steps=2), fallback=lambda: built.append(1) or fp32)
    outcomes = runner.run(["a.png", "b.png"], tmp_path)
    assert [o.ok for o in outcomes] == [True, True] and built == [1]  # fallback built once
    info = json.loads((tmp_path / "a" / "run.json").read_text())
    assert "denoise step 7/50" in info["fp32_fallback"]


def test_non_finite_without_fallback_is_reported(tmp_path):
    runner = BatchRunner(_Pipeline(NumericsError("the latent became non-finite in denoise step 3/50")), RunSettings())
    (outcome,) = runner.run(["a.png"], tmp_path)
    assert not outcome.ok and "step 3/50" in outcome.error
    assert list(tmp_path.iterdir()) == []


def test_out_of_memory_suggests_the_decode_chunk(tmp_path):
    runner = BatchRunner(_Pipeline(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")), RunSettings())
    (outcome,) = runner.run(["a.png"], tmp_path)
    assert not outcome.ok and outcome.error.startswith("out of memory") and "--decode-chunk" in outcome.error
    assert is_out_of_memory(MemoryError()) and not is_out_of_memory(ValueError("bad value"))
    assert "sv3d-trt export --decode-chunk" in failure_message(MemoryError("x"), "tensorrt")
    assert "lower --decode-chunk" in failure_message(MemoryError("x"), "torch-eager")


def test_output_names_are_unique():
    assert output_names(["a/cat.png", "b/cat.jpg", "dog.png", "c/cat.png"]) == ["cat", "cat-2", "dog", "cat-3"]


# ---- which backend serves which artifact -------------------------------------------------


def _artifact(tmp_path, kind: str, builder: str = "tensorrt-rtx") -> Path:
    d = tmp_path / kind
    d.mkdir()
    if kind == "engines":
        (d / "manifest.json").write_text(json.dumps({"builder": {"backend": builder, "version": "1"}}))
    else:
        (d / "export.json").write_text("{}")
    return d


def test_backend_follows_the_artifact(tmp_path, tiny_checkpoint):
    engines, onnx = _artifact(tmp_path, "engines"), _artifact(tmp_path, "onnx")
    assert choose_backend(engines) == "tensorrt-rtx"
    assert choose_backend(onnx) == "ort" and choose_backend(onnx, "onnxruntime") == "ort"
    assert choose_backend(tiny_checkpoint) == "torch-eager"
    assert choose_backend(tiny_checkpoint, "torch") == "torch-eager"
    assert choose_backend(engines, "tensorrt-rtx") == "tensorrt-rtx"


def test_forced_backends_the_artifact_cannot_serve(tmp_path, tiny_checkpoint):
    engines, onnx = _artifact(tmp_path, "engines"), _artifact(tmp_path, "onnx")
    with pytest.raises(StaleEngineError, match="--backend tensorrt`"):
        choose_backend(engines, "tensorrt")
    with pytest.raises(BackendUnavailableError, match="ONNX export"):
        choose_backend(engines, "ort")
    with pytest.raises(BackendUnavailableError, match=f"sv3d-trt build --onnx {onnx}"):
        choose_backend(onnx, "tensorrt")
    with pytest.raises(BackendUnavailableError, match="sv3d-trt export --checkpoint"):
        choose_backend(tiny_checkpoint, "ort")
    with pytest.raises(StaleEngineError, match="sv3d-trt export"):
        choose_backend(tmp_path / "nothing-here")


def test_missing_package_names_the_install(monkeypatch):
    monkeypatch.setattr(artifacts.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BackendUnavailableError, match="pip install tensorrt-rtx-cu13"):
        require_installed("tensorrt-rtx")
    with pytest.raises(BackendUnavailableError, match="onnxruntime-gpu"):
        require_installed("ort")


def test_mesh_is_written_into_the_image_directory(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    import sv3d_trt.mesh.pipeline as mesh_pipeline

    calls = []

    def fake_reconstruct(frames, cameras, out_path, device="cpu", **_):
        calls.append((frames.shape, len(cameras["frames"]), device))
        Path(out_path).write_bytes(b"glTF")

    monkeypatch.setattr(mesh_pipeline, "reconstruct_mesh", fake_reconstruct)
    (outcome,) = BatchRunner(_Pipeline(), RunSettings(mesh=True)).run(["a.png"], tmp_path)
    assert outcome.ok, outcome.error
    assert calls == [((21, 16, 16, 3), 21, "cpu")]
    assert (tmp_path / "a" / "mesh.glb").read_bytes() == b"glTF" and "mesh" in outcome.timings


def test_the_runner_closes_its_pipeline(tmp_path):
    """`with BatchRunner(...)` (generate, demo, run) closes the pipeline at the end: engines and
    device memory are freed and TensorRT-RTX saves its runtime cache (Backend.close)."""
    pipe = _Pipeline()
    with BatchRunner(pipe, RunSettings()) as runner:
        (outcome,) = runner.run(["a.png"], tmp_path)
    assert outcome.ok and pipe.closed


def test_run_closes_its_pipeline_when_the_orbit_is_refused(tmp_path, monkeypatch):
    """A bad --orbit is refused after the artifacts are opened (it needs their variant): the pipeline
    opened for it is closed all the same, not left to the garbage collector."""
    from sv3d_trt.runtime import Pipeline

    pipe = _Pipeline()
    pipe.config = type("Config", (), {"variant": "sv3d_u", "num_frames": 21})()
    monkeypatch.setattr(Pipeline, "from_artifacts", staticmethod(lambda *a, **k: pipe))
    checkpoint = tmp_path / "ck.safetensors"
    checkpoint.write_bytes(b"x")
    result = CliRunner().invoke(main, ["run", str(example_image_path("mug")), "--checkpoint", str(checkpoint),
                                       "--out", str(tmp_path / "out"), "--orbit", "dynamic"])
    assert result.exit_code != 0 and "error:" in result.output, result.output
    assert pipe.closed

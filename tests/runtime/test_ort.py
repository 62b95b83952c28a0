"""The ort backend over a real tiny export: same frames as torch-eager for the same seed,
padded decode chunks, stale exports refused, non-finite latents reported by step."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from sv3d_trt.errors import BackendUnavailableError, NumericsError, StaleEngineError
from sv3d_trt.runtime import Pipeline
from sv3d_trt.runtime.ort import OrtBackend, choose_providers

from tests.conftest import rel_err

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def ort_pipe(tiny_onnx_dir):
    return Pipeline.from_artifacts(tiny_onnx_dir, threads=2)


@pytest.fixture(scope="module")
def torch_pipe(tiny_checkpoint):
    return Pipeline.from_checkpoint(tiny_checkpoint)


def test_from_artifacts_picks_ort(ort_pipe):
    assert isinstance(ort_pipe.backend, OrtBackend)
    info = ort_pipe.backend.describe()
    assert info["backend"] == "ort" and info["providers"] == ["CPUExecutionProvider"]
    assert info["decode_chunk"] == 7 and ort_pipe.variant == "sv3d_p"


def test_encode_matches_torch(ort_pipe, torch_pipe):
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32)
    noised = image + np.float32(1e-5) * rng.standard_normal(image.shape).astype(np.float32)
    clip, latent = ort_pipe.backend.encode(image, noised)
    ref_clip, ref_latent = torch_pipe.backend.encode(image, noised)
    assert np.abs(ref_clip).mean() > 1e-3 and np.abs(ref_latent).mean() > 1e-3
    assert rel_err(clip, ref_clip) < 1e-4 and rel_err(latent, ref_latent) < 1e-4


def test_same_seed_same_frames_as_torch(ort_pipe, torch_pipe, example_image):
    ours = ort_pipe.generate(example_image, seed=11, steps=2)
    ref = torch_pipe.generate(example_image, seed=11, steps=2)
    assert ours.noise_source == ref.noise_source == "torch-cpu"
    assert ref.latent.std() > 0.1 and ref.frames.std() > 1.0
    assert rel_err(ours.latent, ref.latent) < 1e-3
    diff = np.abs(ours.frames.astype(int) - ref.frames.astype(int))
    assert diff.max() <= 2 and (diff > 0).mean() < 0.01  # uint8 truncation flips a few values by 1


def test_decode_pads_the_last_chunk(ort_pipe, torch_pipe):
    latent = np.random.default_rng(1).standard_normal((9, 4, 8, 8)).astype(np.float32)  # 7 + 2 (padded to 7)
    frames = ort_pipe.backend.decode(latent, chunk=14)
    ref = torch_pipe.backend.decode(latent, chunk=9)
    assert frames.shape == (9, 3, 64, 64) and np.abs(ref).mean() > 1e-2
    assert rel_err(frames, ref) < 1e-4


def test_conditioning_reuse(ort_pipe, example_image):
    cond, _ = ort_pipe.condition(example_image, seed=4)
    direct = ort_pipe.generate(example_image, seed=4, steps=2)
    reused = ort_pipe.generate(conditioning=cond, seed=4, steps=2)
    assert np.array_equal(direct.latent, reused.latent)


def test_non_finite_latent_names_the_step(ort_pipe, example_image, monkeypatch):
    backend = ort_pipe.backend
    real_step = type(backend).step
    calls = []

    def overflowing_step(self, state, x, sigma, sigma_next):
        calls.append(sigma)
        out = real_step(self, state, x, sigma, sigma_next)
        return out * np.float32(np.inf) if len(calls) == 2 else out

    monkeypatch.setattr(type(backend), "step", overflowing_step)
    with pytest.raises(NumericsError, match=r"denoise step 2/3"):
        ort_pipe.generate(example_image, seed=0, steps=3)
    assert len(calls) == 2  # stopped at the bad step, not after the loop


def test_export_that_disagrees_with_its_graphs_is_stale(tiny_onnx_dir, tmp_path):
    for p in tiny_onnx_dir.iterdir():
        os.symlink(p, tmp_path / p.name)
    info = json.loads((tiny_onnx_dir / "export.json").read_text())
    info["graphs"]["vae_decoder"]["inputs"][0]["shape"][0] = 3  # the graph was exported with chunk 7
    (tmp_path / "export.json").unlink()
    (tmp_path / "export.json").write_text(json.dumps(info))
    with pytest.raises(StaleEngineError, match="sv3d-trt export"):
        OrtBackend(tmp_path)


def test_a_graph_changed_after_export_is_refused(tiny_onnx_dir, tmp_path):
    """`run --onnx` re-checks the hashes export.json records, as `verify --onnx` does for engines:
    a modified graph is refused instead of silently giving other frames."""
    from click.testing import CliRunner

    from sv3d_trt.cli import main
    from sv3d_trt.preprocess import example_image_path

    changed = tmp_path / "onnx"
    shutil.copytree(tiny_onnx_dir, changed)
    graph = changed / "vae_decoder.onnx"
    data = bytearray(graph.read_bytes())
    data[-1] ^= 1  # one bit of the serialized graph
    graph.write_bytes(bytes(data))
    with pytest.raises(StaleEngineError, match=r"vae_decoder: graph .*vae_decoder.onnx changed since the export"):
        OrtBackend(changed)
    r = CliRunner().invoke(main, ["run", str(example_image_path("mug")), "--onnx", str(changed),
                                  "--out", str(tmp_path / "out"), "--steps", "2"])
    assert r.exit_code == 1 and "does not match its export.json" in r.output, r.output
    assert not (tmp_path / "out").exists()


def test_missing_export_names_the_command(tmp_path):
    with pytest.raises(StaleEngineError, match="sv3d-trt export --checkpoint"):
        OrtBackend(tmp_path)


def test_provider_choice():
    cpu_only = ["CPUExecutionProvider"]
    both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers("auto", cpu_only) == cpu_only
    assert choose_providers("auto", both) == both
    assert choose_providers("cpu", both) == cpu_only
    assert choose_providers("cuda:1", both) == both
    with pytest.raises(BackendUnavailableError, match="onnxruntime-gpu"):
        choose_providers("cuda", cpu_only)
    with pytest.raises(BackendUnavailableError):
        choose_providers("mps", both)

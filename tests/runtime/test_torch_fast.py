"""`torch-fast` against the `torch-eager` reference on the tiny config (CPU, fp32).

Each transform alone, and all together, must give the reference's CFG step (rel <= 1e-5: they
are exact rewrites, only float summation order differs). The step is compared at sigma = 1,
sigma_next = 0, where it returns the guided denoised prediction D = 0.5 x - 0.71 F(x), so a
UNet error shows at full weight (at the schedule's ends F is scaled away). A seeded tiny
`generate --backend torch-fast` must match `--backend torch-eager` at >= 40 dB PSNR.
"""
from __future__ import annotations

import itertools
from dataclasses import fields, replace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sv3d_trt.errors import NumericsError
from sv3d_trt.fast import FastOptions
from sv3d_trt.runtime import Pipeline
from sv3d_trt.runtime.backend import Conditioning, backend_class
from sv3d_trt.runtime.torch_eager import TorchEagerBackend
from sv3d_trt.runtime.torch_fast import TorchFastBackend
from tests.conftest import rel_err

TRANSFORMS = [f.name for f in fields(FastOptions) if f.type == "bool" and f.name != "cuda_graph"]
EXACT = 1e-5


def option_sets() -> dict[str, FastOptions]:
    """Every transform alone, none, and all together."""
    none = FastOptions.reference()
    sets = {"none": none, **{name: replace(none, **{name: True}) for name in TRANSFORMS}}
    sets["all"] = FastOptions()
    return sets


@pytest.fixture(scope="module")
def inputs(tiny_checkpoint):
    """Random conditioning, camera vector, guidance scales and latent for one step."""
    from sv3d_trt.models.checkpoint import inspect_checkpoint

    cfg = inspect_checkpoint(tiny_checkpoint)
    T, h = cfg.num_frames, cfg.latent_size
    rng = np.random.default_rng(7)
    cond = Conditioning(
        clip_embedding=rng.standard_normal((1, cfg.unet.context_dim)).astype(np.float32),
        concat_latent=rng.standard_normal((1, 4, h, h)).astype(np.float32),
        input_rgb=np.zeros((cfg.image_size, cfg.image_size, 3), np.uint8),
    )
    vector = rng.standard_normal((T, cfg.unet.adm_in_channels)).astype(np.float32)
    scales = np.linspace(1.0, 2.5, T).astype(np.float32)
    x = rng.standard_normal((T, 4, h, h)).astype(np.float32)
    return cond, vector, scales, x


def run_step(backend, inputs, sigma=1.0, sigma_next=0.0) -> np.ndarray:
    cond, vector, scales, x = inputs
    state = backend.prepare(cond, vector, scales)
    return backend.to_numpy(backend.step(state, backend.to_native(x), sigma, sigma_next))


@pytest.fixture(scope="module")
def reference_step(tiny_checkpoint, inputs):
    torch.set_num_threads(2)
    return run_step(TorchEagerBackend.from_checkpoint(tiny_checkpoint), inputs)


@pytest.mark.parametrize("name", list(option_sets()))
def test_transform_equals_reference_step(tiny_checkpoint, inputs, reference_step, name):
    backend = TorchFastBackend.from_checkpoint(tiny_checkpoint, options=option_sets()[name])
    out = run_step(backend, inputs)
    assert np.isfinite(out).all() and out.std() > 0.1  # a real prediction, not zeros
    assert rel_err(out, reference_step) <= EXACT, f"{name}: rel err {rel_err(out, reference_step):.2e}"


def test_euler_branch_equals_reference(tiny_checkpoint, inputs):
    """sigma_next != 0: the device-side Euler update, all transforms on."""
    ref = run_step(TorchEagerBackend.from_checkpoint(tiny_checkpoint), inputs, 2.5, 1.7)
    out = run_step(TorchFastBackend.from_checkpoint(tiny_checkpoint), inputs, 2.5, 1.7)
    x = inputs[3]
    assert rel_err(out - x, ref - x) <= EXACT  # compare the update itself, not the x it is added to


def test_pipeline_passes_options(tiny_checkpoint):
    pipe = Pipeline.from_checkpoint(tiny_checkpoint, backend="torch-fast", fold=False, channels_last=False)
    assert isinstance(pipe.backend, TorchFastBackend)
    assert pipe.backend.options.fold is False and pipe.backend.options.channels_last is False
    assert pipe.backend.options.hoist is True
    assert backend_class("torch-compile").name == "torch-compile"
    with pytest.raises(TypeError):
        Pipeline.from_checkpoint(tiny_checkpoint, backend="torch-fast", no_such_option=True)


def test_nonfinite_latent_names_the_step(tiny_checkpoint, inputs):
    cond, vector, scales, x = inputs
    backend = TorchFastBackend.from_checkpoint(tiny_checkpoint)
    state = backend.prepare(cond, vector, scales)
    with torch.inference_mode():
        state.concat[0, 0, 0, 0] = float("nan")  # poisons the uncond half, hence the guided latent
    with pytest.raises(NumericsError, match="step 1/1"):
        backend.denoise(state, x, np.array([2.0, 0.0]))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def generate_frames(checkpoint, image, out, backend: str, steps: int) -> np.ndarray:
    from PIL import Image

    from sv3d_trt.cli import main

    result = CliRunner().invoke(main, ["generate", str(image), "--checkpoint", str(checkpoint), "--out", str(out),
                                       "--backend", backend, "--steps", str(steps), "--seed", "11"])
    assert result.exit_code == 0, result.output
    return np.stack([np.asarray(Image.open(p)) for p in sorted(out.glob("frame_*.png"))])


@pytest.mark.parametrize("steps", [3, pytest.param(50, marks=pytest.mark.slow)])
def test_generate_cli_matches_eager(tiny_checkpoint, example_image, tmp_path, steps):
    eager = generate_frames(tiny_checkpoint, example_image, tmp_path / "eager", "torch-eager", steps)
    fast = generate_frames(tiny_checkpoint, example_image, tmp_path / "fast", "torch-fast", steps)
    assert eager.shape == fast.shape and eager.shape[0] == 21
    assert eager[:-1].std() > 5  # generated frames (the last is the input view), not a flat image
    assert psnr(fast[:-1], eager[:-1]) >= 40


@pytest.mark.slow
@pytest.mark.parametrize("name", ["torch-compile", "torch-fast"])
def test_compiled_backends_equal_reference_and_cache(tiny_checkpoint, inputs, reference_step, tmp_path, name):
    """Slow: inductor compiles the tiny UNet in minutes on a 2-core CPU."""
    options = {"cache_dir": tmp_path} if name == "torch-compile" else {"compile": "default", "compile_cache": tmp_path}
    backend = backend_class(name).from_checkpoint(tiny_checkpoint, **options)
    out = run_step(backend, inputs)
    assert rel_err(out, reference_step) <= 1e-4  # inductor reorders float math; not bit-exact
    assert len(list(tmp_path.glob("*.bin"))) == 1  # the compile cache was written


# ---- CUDA -------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", [("fp32", 1e-3), ("fp16", 2e-2), ("bf16", 5e-2)])
def test_cuda_graph_step_matches_eager(tiny_checkpoint, inputs, dtype, tol):
    """The captured step (Triton kernels, graph replay) against the eager reference on CUDA.
    fp32 tolerance allows TF32 convolutions (cuDNN default) in both; 16-bit ones their rounding."""
    ref = run_step(TorchEagerBackend.from_checkpoint(tiny_checkpoint, device="cuda", dtype=dtype), inputs)
    fast = TorchFastBackend.from_checkpoint(tiny_checkpoint, device="cuda", dtype=dtype)
    assert fast.options.cuda_graph
    first, again = run_step(fast, inputs), run_step(fast, inputs)  # capture, then a replay
    np.testing.assert_array_equal(first, again)
    assert rel_err(first, ref) <= tol


@pytest.mark.gpu
def test_cuda_denoise_matches_steps(tiny_checkpoint, inputs):
    """The device-schedule loop equals calling `step` per sigma pair (same graph)."""
    cond, vector, scales, x = inputs
    fast = TorchFastBackend.from_checkpoint(tiny_checkpoint, device="cuda")
    state = fast.prepare(cond, vector, scales)
    sigmas = np.array([3.0, 1.5, 0.7, 0.0])
    loop = fast.denoise(state, x, sigmas)
    y = fast.to_native(x)
    for s, s_next in itertools.pairwise(sigmas):
        y = fast.step(state, y, float(s), float(s_next))
    np.testing.assert_allclose(loop, fast.to_numpy(y), rtol=1e-6, atol=1e-6)

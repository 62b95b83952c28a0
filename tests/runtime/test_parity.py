"""One parity check for every registered backend that can run here: the protocol's stages on
the same seeded inputs (image, noised image, camera vector, x0, schedule, latents to decode),
from the same tiny random checkpoint (or its fp32 export / engines built from it), against the
torch-eager reference, with a relative-error threshold per precision. A backend that cannot
run on this machine skips with its reason (BackendUnavailableError's message)."""
from __future__ import annotations

import numpy as np
import pytest

from sv3d_trt.contract.backends import BACKENDS, backend_info
from sv3d_trt.errors import BackendUnavailableError
from sv3d_trt.runtime.artifacts import require_installed
from sv3d_trt.runtime.backend import Backend, Conditioning, backend_class
from sv3d_trt.sampler import edm_sigmas, initial_noise_scale, triangle_cfg_scales
from tests.conftest import rel_err

# Everything runs in fp32 here (checkpoint backends in fp32, the fp32 export, fp32 engines). The
# loop tolerance covers 3 steps of float summation-order differences amplified by CFG.
TOLERANCE = {"fp32": {"encode": 1e-4, "denoise": 1e-3, "decode": 1e-4}}
SLOW = {"torch-compile"}  # inductor's first compile takes minutes on 2 cores


def _stage_inputs(config):
    rng = np.random.default_rng(2024)
    T, S, h = config.num_frames, config.image_size, config.latent_size
    image = rng.uniform(-1, 1, (1, 3, S, S)).astype(np.float32)
    sigmas = edm_sigmas(3)
    return {
        "image": image,
        "noised": image + np.float32(1e-5) * rng.standard_normal(image.shape).astype(np.float32),
        "vector": rng.standard_normal((T, config.unet.adm_in_channels)).astype(np.float32),
        "scales": triangle_cfg_scales(T).astype(np.float32),
        "x0": (rng.standard_normal((T, 4, h, h)) * initial_noise_scale(sigmas[0])).astype(np.float32),
        "sigmas": sigmas,
        "z": (rng.standard_normal((T, 4, h, h)) / config.vae.scale_factor).astype(np.float32),
    }


def _stages(backend: Backend, inputs: dict) -> dict[str, np.ndarray]:
    clip, latent = backend.encode(inputs["image"], inputs["noised"])
    cond = Conditioning(clip, latent, np.zeros((*inputs["image"].shape[2:], 3), np.uint8))
    state = backend.prepare(cond, inputs["vector"], inputs["scales"])
    return {"clip": clip, "latent": latent, "denoise": backend.denoise(state, inputs["x0"], inputs["sigmas"]),
            "decode": backend.decode(inputs["z"], 7)}


def _engines(name: str, onnx_dir, tmp_path_factory):
    """fp32 engines of the tiny export for this GPU; skipped before building without a GPU."""
    from sv3d_trt.export.build import build_engines
    from sv3d_trt.runtime import cuda

    try:
        cuda.set_device(0)
    except BackendUnavailableError as e:
        pytest.skip(f"the {name} backend needs an NVIDIA GPU and driver: {e}")
    return build_engines(onnx_dir, tmp_path_factory.mktemp(name), backend=name).directory


def _open(name: str, checkpoint, request, tmp_path_factory) -> Backend:
    try:
        require_installed(name)
        kind = backend_info(name).artifact
        if kind == "checkpoint":
            return backend_class(name).from_checkpoint(checkpoint, device="cpu", dtype="fp32")
        onnx_dir = request.getfixturevalue("tiny_onnx_dir")
        if kind == "onnx":
            return backend_class(name).from_artifacts(onnx_dir, device="cpu")
        return backend_class(name).from_artifacts(_engines(name, onnx_dir, tmp_path_factory))
    except BackendUnavailableError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def reference(tiny_checkpoint):
    with backend_class("torch-eager").from_checkpoint(tiny_checkpoint) as backend:
        inputs = _stage_inputs(backend.config)
        return inputs, _stages(backend, inputs)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
                                  for n in BACKENDS if n != "torch-eager"])
def test_backend_matches_the_reference(name, tiny_checkpoint, reference, request, tmp_path_factory):
    inputs, ref = reference
    with _open(name, tiny_checkpoint, request, tmp_path_factory) as backend:
        ours = _stages(backend, inputs)
    tol = TOLERANCE["fp32"]
    assert np.abs(ref["denoise"]).mean() > 0.1 and ref["decode"].std() > 0.01  # real values, not zeros
    assert rel_err(ours["clip"], ref["clip"]) <= tol["encode"]
    assert rel_err(ours["latent"], ref["latent"]) <= tol["encode"]
    assert rel_err(ours["denoise"], ref["denoise"]) <= tol["denoise"], rel_err(ours["denoise"], ref["denoise"])
    assert rel_err(ours["decode"], ref["decode"]) <= tol["decode"]

"""The reference pipeline on the tiny config: determinism, conditioning reuse, variants."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from sv3d_trt.errors import CameraError
from sv3d_trt.runtime import Pipeline


@pytest.fixture(scope="module")
def pipe(tiny_checkpoint):
    return Pipeline.from_checkpoint(tiny_checkpoint)


def test_seeded_generate_is_bit_identical(pipe, example_image):
    a = pipe.generate(example_image, seed=7, steps=4)
    b = pipe.generate(example_image, seed=7, steps=4)
    assert a.frames.shape == (21, 64, 64, 3) and a.frames.dtype == np.uint8
    assert a.latent.std() > 1e-3 and np.isfinite(a.latent).all()
    assert np.array_equal(a.latent, b.latent) and np.array_equal(a.frames, b.frames)
    c = pipe.generate(example_image, seed=8, steps=4)
    assert not np.array_equal(a.latent, c.latent)


def test_frame_20_is_the_input_view(pipe, example_image):
    r = pipe.generate(example_image, seed=1, steps=2)
    assert np.array_equal(r.frames[-1], r.input_rgb)
    raw = pipe.generate(example_image, seed=1, steps=2, replace_last_frame=False)
    assert not np.array_equal(raw.frames[-1], r.input_rgb)
    assert len(r.cameras["frames"]) == 21


def test_conditioning_is_reusable_across_orbits(pipe, example_image):
    cond, _ = pipe.condition(example_image, seed=3)
    direct = pipe.generate(example_image, seed=3, steps=3)
    reused = pipe.generate(conditioning=cond, seed=3, steps=3)
    assert np.array_equal(direct.latent, reused.latent)  # same draw order, no re-encode
    high = pipe.generate(conditioning=cond, seed=3, steps=3, elevation=30.0)
    assert not np.array_equal(high.latent, reused.latent)  # the camera reaches the UNet


def test_sv3d_u_refuses_camera_arguments(tiny_checkpoint_u, example_image):
    pipe_u = Pipeline.from_checkpoint(tiny_checkpoint_u)
    assert pipe_u.variant == "sv3d_u"
    with pytest.raises(CameraError, match="sv3d_u"):
        pipe_u.generate(example_image, elevation=20.0, steps=1)
    r = pipe_u.generate(example_image, seed=0, steps=2)
    assert r.frames.shape == (21, 64, 64, 3)


def test_importing_the_runtime_does_not_import_torch():
    code = "import sys, sv3d_trt, sv3d_trt.runtime; sv3d_trt.Pipeline; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

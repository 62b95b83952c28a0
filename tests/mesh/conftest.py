"""Mesh-stage fixtures: the device (CPU always, CUDA too when present) and the SV3D orbit cameras."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from sv3d_trt.mesh.cameras import load_cameras, orbit_cameras, sv3d_orbit

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


@pytest.fixture(scope="session")
def rig():
    return load_cameras(orbit_cameras(*sv3d_orbit()))


@pytest.fixture(scope="session")
def write_orbit():
    """write_orbit(folder, shape, size): the 21 frames of a procedural shape at the SV3D orbit as PNGs, and
    cameras.json, the way `generate` writes an orbit -> folder."""
    from sv3d_trt.mesh import procedural_shape
    from sv3d_trt.mesh.evaluate import render_ground_truth

    def write(folder, shape="sphere", size=32):
        folder.mkdir(parents=True, exist_ok=True)
        cameras = orbit_cameras(*sv3d_orbit(), image_size=size)
        frames = render_ground_truth(procedural_shape(shape), cameras, size).numpy()
        assert frames.min() < 0.5  # the object is there
        for i, frame in enumerate(frames):
            Image.fromarray((frame * 255).round().astype(np.uint8)).save(folder / f"frame_{i:03d}.png")
        (folder / "cameras.json").write_text(json.dumps(cameras))
        return folder

    return write

"""Mesh-stage fixtures: the device (CPU always, CUDA too when present) and the SV3D orbit cameras."""
from __future__ import annotations

import pytest
import torch

from sv3d_trt.mesh.cameras import load_cameras, orbit_cameras, sv3d_orbit

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


@pytest.fixture(scope="session")
def rig():
    return load_cameras(orbit_cameras(*sv3d_orbit()))

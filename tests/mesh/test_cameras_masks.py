import json
import math

import numpy as np
import pytest
import torch

from sv3d_trt.errors import CameraError, ImageError
from sv3d_trt.mesh.cameras import load_cameras, orbit_cameras, project, sv3d_orbit
from sv3d_trt.mesh.masks import key_white, normalise_colours, prepare_frames


def test_orbit_cameras_geometry():
    rig = load_cameras(orbit_cameras(*sv3d_orbit(elevation_deg=10.0)))
    assert rig.num_views == 21 and rig.width == 576
    assert abs(rig.intrinsics[0] - 947.9) < 0.1  # mesh.md: focal ~947.9 px at 576
    np.testing.assert_allclose(np.linalg.norm(rig.centres, axis=1), 2.0, rtol=1e-9)
    np.testing.assert_allclose(rig.centres[20], [2 * math.cos(math.radians(10)), 0, 2 * math.sin(math.radians(10))],
                               atol=1e-9)
    views = rig.views(64)
    uvz = project(torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.3]]), views)
    torch.testing.assert_close(uvz[:, 0, :2], torch.full((21, 2), 32.0))  # origin -> image centre
    assert torch.all(uvz[:, 1, 1] < 32.0)  # world up is image up (v decreases)
    # Camera x axis (image right) is (-sin A, cos A, 0): +y for the input view at azimuth 0.
    right = torch.tensor(rig.w2c[:, 0, :3], dtype=torch.float32)
    torch.testing.assert_close(right[20], torch.tensor([0.0, 1.0, 0.0]))


def test_foundation_key_names_and_extra_keys(tmp_path):
    data = orbit_cameras(*sv3d_orbit())
    for frame in data["frames"]:  # the reader falls back to camera_to_world alone
        frame.pop("world_to_camera")
        frame["extra"] = 1
    data["intrinsics"]["K"] = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    path = tmp_path / "cameras.json"
    path.write_text(json.dumps(data))
    rig = load_cameras(path)
    np.testing.assert_allclose(rig.w2c, load_cameras(orbit_cameras(*sv3d_orbit())).w2c, atol=1e-9)


def test_bad_cameras_raise(tmp_path):
    with pytest.raises(CameraError):
        load_cameras(tmp_path / "missing.json")
    with pytest.raises(CameraError):
        load_cameras({"frames": [{"w2c": [[1, 0], [0, 1]]}], "intrinsics": {"fx": 1, "fy": 1, "cx": 0, "cy": 0,
                                                                          "width": 4, "height": 4}})


def test_white_key_and_white_balance():
    g = torch.Generator().manual_seed(0)
    rgb = torch.ones(2, 16, 16, 3)
    rgb[:, 4:12, 4:12] = torch.rand(2, 8, 8, 3, generator=g) * 0.6
    mask = key_white(rgb)
    assert mask[:, 5:11, 5:11].min() == 1.0 and mask[:, :4].max() == 0.0
    assert mask[:, 4, 4:12].min() > 0.0  # border pixels: coverage d / (largest d nearby), object all the same
    # An antialiased edge pixel, 30 % covered by a colour with d = 0.5, reads back as 30 % coverage.
    edge = torch.ones(1, 9, 9, 3)
    edge[:, :, :4] = 0.5
    edge[:, :, 4] = 0.3 * 0.5 + 0.7
    torch.testing.assert_close(key_white(edge)[0, 4, 4], torch.tensor(0.3))
    tinted = rgb * torch.tensor([0.9, 0.95, 1.0])
    balanced = normalise_colours(tinted, mask)
    torch.testing.assert_close(balanced[:, 0, 0], torch.ones(2, 3))
    torch.testing.assert_close(balanced[:, 5, 5], rgb[:, 5, 5], rtol=1e-5, atol=1e-5)


def test_prepare_frames_alpha_and_errors(tmp_path):
    rgba = np.zeros((21, 8, 8, 4), dtype=np.uint8)
    rgba[:, 2:6, 2:6] = [200, 10, 10, 255]
    frames = prepare_frames(rgba, 21)
    assert frames.mask.sum() == 21 * 16 and torch.all(frames.rgb[:, 0, 0] == 1.0)
    with pytest.raises(ImageError):
        prepare_frames(np.ones((21, 8, 8, 3), dtype=np.float32), 21)  # all white: nothing to reconstruct
    with pytest.raises(ImageError):
        prepare_frames(tmp_path, 21)  # no frame files

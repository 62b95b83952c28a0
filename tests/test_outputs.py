"""Output writing: PNGs, mp4, gif, cameras.json, input.png; and the torch-free foundation modules."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from sv3d_trt.cameras import cameras_json, dynamic_orbit
from sv3d_trt.outputs import save_outputs


@pytest.fixture
def frames():
    rng = np.random.default_rng(0)
    # Smooth random content (video codecs blur pure noise beyond recognition).
    small = rng.integers(0, 256, (21, 8, 8, 3), dtype=np.uint8)
    return np.stack([np.asarray(Image.fromarray(f).resize((64, 64), Image.BILINEAR)) for f in small])


def test_save_outputs_writes_everything(tmp_path, frames):
    cams = cameras_json(dynamic_orbit(21, 15.0, 2), image_size=64)
    paths = save_outputs(tmp_path / "run", frames, cams, frames[-1], fps=10)
    out = tmp_path / "run"
    assert [p.name for p in paths["frames"]] == [f"frame_{i:03d}.png" for i in range(21)]
    for i, p in enumerate(paths["frames"]):
        np.testing.assert_array_equal(np.asarray(Image.open(p)), frames[i])  # PNG is lossless
    np.testing.assert_array_equal(np.asarray(Image.open(paths["input"])), frames[-1])
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]  # no temp files left behind

    import imageio.v3 as iio

    video = iio.imread(paths["mp4"])
    assert video.shape == (21, 64, 64, 3)
    assert np.abs(video.astype(float) - frames).mean() < 12  # lossy, but the same content
    assert np.abs(video[0].astype(float) - frames[5]).mean() > 20  # and frames stay in order

    gif = Image.open(paths["gif"])
    assert gif.n_frames == 21 and gif.info["loop"] == 0 and gif.info["duration"] == 100

    data = json.loads(paths["cameras"].read_text())
    assert [f["file"] for f in data["frames"]] == [f"frame_{i:03d}.png" for i in range(21)]
    assert "file" not in cams["frames"][0]  # the caller's dict is not modified
    for f in data["frames"]:
        c2w = np.array(f["camera_to_world"])
        r, center = c2w[:3, :3], c2w[:3, 3]
        np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-9)
        assert np.linalg.det(r) == pytest.approx(1.0, abs=1e-9)
        assert np.linalg.norm(center) == pytest.approx(2.0, rel=1e-9)
        np.testing.assert_allclose(r[:, 2], -center / 2.0, atol=1e-9)  # looks at the origin
    assert data["frames"][20]["azimuth_deg"] == 0.0


def test_save_outputs_odd_size_and_no_input(tmp_path, frames):
    odd = frames[:, :63, :61]
    paths = save_outputs(tmp_path, odd, cameras_json(None, image_size=63))
    assert "input" not in paths and not (tmp_path / "input.png").exists()
    import imageio.v3 as iio

    assert iio.imread(paths["mp4"]).shape == (21, 64, 62, 3)  # padded to even for yuv420p
    assert np.asarray(Image.open(paths["frames"][0])).shape == (63, 61, 3)


def test_save_outputs_rejects_bad_frames(tmp_path, frames):
    with pytest.raises(ValueError, match="frames must be uint8"):
        save_outputs(tmp_path, frames.astype(np.float32), cameras_json(None))
    with pytest.raises(ValueError, match="cameras describe 21 frames, got 20 images"):
        save_outputs(tmp_path, frames[:20], cameras_json(None))


def test_foundation_modules_do_not_import_torch(tmp_path):
    code = (
        "import sys, numpy as np, sv3d_trt.sampler, sv3d_trt.preprocess, sv3d_trt.cameras, sv3d_trt.outputs\n"
        "assert 'torch' not in sys.modules, 'import'\n"
        "from sv3d_trt import cameras, outputs, preprocess\n"
        "p = preprocess.prepare_image(preprocess.load_image(preprocess.example_image_path('toy')), size=64)\n"
        "cameras.camera_vector('sv3d_p', cameras.resolve_orbit('sv3d_p', 'dynamic'))\n"
        "frames = np.repeat(p.rgb_uint8[None], 21, axis=0)\n"
        f"outputs.save_outputs({str(tmp_path)!r}, frames, cameras.cameras_json(None, 64), p.rgb_uint8)\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
    assert (tmp_path / "orbit.mp4").stat().st_size > 0

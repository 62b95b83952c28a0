"""End to end: CLI on PNG frames, GLB/OBJ round trip, and the issue's acceptance metrics (CPU, 128 px)."""
import json

import numpy as np
import pytest
import trimesh
from click.testing import CliRunner
from PIL import Image

from sv3d_trt.cli import main
from sv3d_trt.mesh import evaluate, procedural_shape
from sv3d_trt.mesh.cameras import orbit_cameras, sv3d_orbit
from sv3d_trt.mesh.evaluate import render_ground_truth

# Scores are asserted against fixed floors: one thread makes every run the same fit (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")

ACCEPT_RESOLUTION, ACCEPT_ITERS = 128, 100


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("frames")
    cameras = orbit_cameras(*sv3d_orbit(), image_size=64)
    frames = render_ground_truth(procedural_shape("textured_sphere"), cameras, 64)
    assert frames.min() < 0.5  # the object is there
    for i, frame in enumerate(frames):
        Image.fromarray((frame.numpy() * 255).round().astype(np.uint8)).save(folder / f"frame_{i:03d}.png")
    (folder / "cameras.json").write_text(json.dumps(cameras))
    return folder


def test_cli_mesh_writes_textured_glb_and_obj(frames_dir, tmp_path):
    runner = CliRunner()
    for name in ("out.glb", "out.obj"):
        result = runner.invoke(main, ["mesh", str(frames_dir), "--out", str(tmp_path / name), "--iters", "8",
                                      "--resolution", "64"])
        assert result.exit_code == 0, result.output
    assert (tmp_path / "out_contact.png").is_file() and (tmp_path / "out.mtl").is_file()
    for name in ("out.glb", "out.obj"):
        mesh = trimesh.load(tmp_path / name, force="mesh")
        assert len(mesh.faces) > 500 and isinstance(mesh.visual, trimesh.visual.TextureVisuals)
        image = mesh.visual.material.baseColorTexture if name.endswith("glb") else mesh.visual.material.image
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        assert pixels.shape[0] >= 64 and pixels.std() > 0.02  # a real, non-constant texture
        assert mesh.visual.uv.shape == (len(mesh.vertices), 2)


def test_cli_errors_are_one_line(tmp_path):
    (tmp_path / "cameras.json").write_text("{}")
    result = CliRunner().invoke(main, ["mesh", str(tmp_path), "--out", str(tmp_path / "x.glb")])
    assert result.exit_code == 1 and "error:" in result.output


# (max chamfer_l1, min fscore_2): the bounds. Measured at 128 px, 100 steps (2 CPU threads): sphere
# 0.0094 / 0.986, torus 0.0063 / 0.976, box 0.0100 / 0.912 (the box's top and bottom are never seen from the
# orbit: the cameras sit between them), composite (allowed to trail) 0.0152 / 0.748.
ACCEPTANCE = {"sphere": (0.015, 0.9), "torus": (0.015, 0.9), "box": (0.015, 0.9)}


@pytest.mark.parametrize("shape", sorted(ACCEPTANCE))
def test_acceptance_geometry(shape):
    max_chamfer, min_fscore = ACCEPTANCE[shape]
    scores = evaluate(procedural_shape(shape), resolution=ACCEPT_RESOLUTION, iters=ACCEPT_ITERS, samples=50_000)
    assert scores["chamfer_l1"] <= max_chamfer, scores
    assert scores["fscore_2"] >= min_fscore, scores
    assert scores["volume_iou"] >= 0.85, scores


# With --perturb default (exposure/white-balance drift, blur, noise, eroded silhouettes, cameras off by up to
# 1.5 degrees and 2 % in radius) the issue asks for F-score@2% >= 0.8. Measured at 128 px, 100 steps (1 thread,
# 100k samples): sphere 0.0091 / 0.947, box 0.0100 / 0.865 (0.0119 / 0.827 before the camera corrections lost
# their common part, 0.0134 / 0.774 with a 10x tighter camera prior).
PERTURBED = {"sphere": (0.015, 0.8), "torus": (0.015, 0.8), "box": (0.015, 0.8)}


@pytest.mark.parametrize("shape", sorted(PERTURBED))
def test_acceptance_geometry_perturbed(shape):
    max_chamfer, min_fscore = PERTURBED[shape]
    scores = evaluate(procedural_shape(shape), resolution=ACCEPT_RESOLUTION, iters=ACCEPT_ITERS, samples=50_000,
                      perturb="default")
    assert scores["chamfer_l1"] <= max_chamfer, scores
    assert scores["fscore_2"] >= min_fscore, scores


def test_acceptance_textured_sphere_psnr():
    scores = evaluate(procedural_shape("textured_sphere"), resolution=ACCEPT_RESOLUTION, iters=ACCEPT_ITERS,
                      samples=20_000)
    assert scores["psnr"] >= 25.0, scores


def test_acceptance_textured_sphere_perturbed_has_no_seams():
    """Per-view gains and corrected cameras keep the views' exposure drift out of the texture: the baked
    texture steps hardly more across the bake's view boundaries than within a view, and the re-render matches
    the unperturbed ground truth. Measured at 128 px, 100 steps: seam_step 0.0012, psnr 26.3 dB; without
    the per-view refinement and the Huber term (FitConfig(refine_views=False, huber=None)): 0.0253, 23.0 dB."""
    scores = evaluate(procedural_shape("textured_sphere"), resolution=ACCEPT_RESOLUTION, iters=ACCEPT_ITERS,
                      samples=20_000, perturb="default")
    assert scores["seam_step"] <= 0.005, scores
    assert scores["psnr"] >= 24.0, scores

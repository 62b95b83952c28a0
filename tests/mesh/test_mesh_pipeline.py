"""End to end: CLI on PNG frames, GLB/OBJ round trip, and the issue's acceptance metrics at the default preset
(`sv3d-trt mesh --quality default`: 256 px, 200 planned steps) on the CPU."""
import numpy as np
import pytest
import trimesh
from click.testing import CliRunner

from sv3d_trt.cli import main
from sv3d_trt.mesh import evaluate, procedural_shape

# Scores are asserted against fixed floors: one thread makes every run the same fit (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory, write_orbit):
    return write_orbit(tmp_path_factory.mktemp("frames"), "textured_sphere", 64)


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


# Issue 19's bounds: vertex chamfer <= 0.015 (chamfer_l1 too) and F-score@2% >= 0.9 clean, >= 0.8 with
# --perturb default (exposure/white-balance drift, blur, noise, eroded silhouettes, cameras off by up to 1.5
# degrees and 2 % in radius). Measured at the default preset on one thread, chamfer_vertex / F@2% clean ->
# perturbed: sphere 0.0092 / 1.000 -> 0.0096 / 1.000, torus 0.0103 / 0.985 -> 0.0093 / 0.985, box 0.0122 /
# 0.983 -> 0.0118 / 0.979, composite 0.0120 / 0.964 -> 0.0125 / 0.943 (bench/RESULTS.md "Mesh").
FLOORS = {"none": (0.015, 0.9), "default": (0.015, 0.8)}
SHAPES = ("box", "composite", "sphere", "torus")


@pytest.mark.parametrize("perturb", sorted(FLOORS))
@pytest.mark.parametrize("shape", SHAPES)
def test_acceptance_geometry(shape, perturb):
    max_chamfer, min_fscore = FLOORS[perturb]
    scores = evaluate(procedural_shape(shape), samples=50_000, perturb=perturb)
    assert scores["resolution"] == 256 and scores["iters"] == 200  # the default preset
    assert scores["chamfer_vertex"] <= max_chamfer, scores
    assert scores["chamfer_l1"] <= max_chamfer, scores
    assert scores["fscore_2"] >= min_fscore, scores
    assert scores["volume_iou"] >= 0.85, scores


def test_acceptance_textured_sphere_psnr():
    scores = evaluate(procedural_shape("textured_sphere"), samples=20_000)
    assert scores["psnr"] >= 30.0, scores  # measured 34.2 dB


def test_acceptance_textured_sphere_perturbed_has_no_seams():
    """Per-view gains and corrected cameras keep the views' exposure drift out of the texture: the baked
    texture steps hardly more across the bake's view boundaries than within a view, and the re-render matches
    the unperturbed ground truth. Measured at the default preset: seam_step -0.0051, psnr 31.8 dB (at 128 px,
    100 steps: 0.0012, 26.3 dB; there without the per-view refinement and the Huber term,
    FitConfig(refine_views=False, huber=None): 0.0253, 23.0 dB)."""
    scores = evaluate(procedural_shape("textured_sphere"), samples=20_000, perturb="default")
    assert scores["seam_step"] <= 0.005, scores
    assert scores["psnr"] >= 28.0, scores

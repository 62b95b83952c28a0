"""The mesh commands' surface: presets and defaults in --help, inputs checked before any progress, no stray
Warp CUDA banner on a CPU machine, progress reports that an ETA can trust."""
import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
from click.testing import CliRunner

from sv3d_trt.cli import main
from sv3d_trt.mesh import QUALITY, procedural_shape, reconstruct_mesh
from sv3d_trt.mesh.cameras import orbit_cameras, sv3d_orbit
from sv3d_trt.mesh.evaluate import render_ground_truth
from sv3d_trt.mesh.schedule import plan, step_cost


def test_mesh_help_shows_presets_and_defaults():
    result = CliRunner().invoke(main, ["mesh", "--help"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"[{'|'.join(QUALITY)}]" in text and "[default: default]" in text
    assert "[default: cpu]" in text and "[default: (from --quality)" in text
    assert "[default: (FRAMES_DIR/cameras.json)]" in text


def test_missing_cameras_is_one_line_before_any_progress(tmp_path):
    result = CliRunner().invoke(main, ["mesh", str(tmp_path), "--out", str(tmp_path / "m.glb")])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [f"error: cameras file {tmp_path / 'cameras.json'} not found"], result.output


def test_bad_out_suffix_and_quality_fail_before_reading_frames(tmp_path):
    (tmp_path / "cameras.json").write_text(json.dumps(orbit_cameras(*sv3d_orbit(), image_size=32)))
    result = CliRunner().invoke(main, ["mesh", str(tmp_path), "--out", str(tmp_path / "m.ply")])
    assert result.exit_code == 1
    assert [line for line in result.output.splitlines() if line.strip()] == [
        "error: unsupported mesh format '.ply'; use one of ('.glb', '.obj')"], result.output
    result = CliRunner().invoke(main, ["mesh", str(tmp_path), "--out", str(tmp_path / "m.glb"), "--quality", "best"])
    assert result.exit_code == 2 and "'best' is not one of" in result.output


def test_warp_starts_without_a_cuda_banner_on_cpu():
    code = "from sv3d_trt.mesh.warp_device import warp_device; print(warp_device('cpu'))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "cpu", proc.stderr
    assert "CUDA" not in proc.stderr and "Warp" not in proc.stderr, proc.stderr


def test_progress_follows_the_stages_and_weights_fine_steps(tmp_path):
    cameras = orbit_cameras(*sv3d_orbit(), image_size=64)
    frames = render_ground_truth(procedural_shape("sphere"), cameras, 64).numpy()
    reports = []
    default = QUALITY["default"]
    config = replace(default, resolution=64, texture_size=128,
                     fit=replace(default.fit, iters=20, coarse_resolution=32, early_stop=None))
    reconstruct_mesh(frames, cameras, tmp_path / "m.glb", config=config, progress=lambda *r: reports.append(r))
    stages = list(dict.fromkeys(stage for stage, _, _ in reports))
    assert stages == ["carve", "optimise", "uv", "bake", "export"]  # reading the inputs comes before any report
    assert len(set(reports)) == len(reports)  # no state twice (Progress would restart a finished bar)
    optimise = [done for stage, done, total in reports if stage == "optimise"]
    # Steps count by their cost: the 12 steps at 32 px advance the bar by less than the 8 at 64 px.
    costs = [step_cost(r) for r in plan(config.fit, 64)]
    assert plan(config.fit, 64) == [32] * 12 + [64] * 8
    expected = [0] + [round(20 * sum(costs[:k + 1]) / sum(costs)) for k in range(20)]
    assert optimise == list(dict.fromkeys(expected)), optimise
    assert round(20 * sum(costs[:12]) / sum(costs)) < 12
    assert all(total == 20 for stage, _, total in reports if stage == "optimise")
    assert np.all([done <= total for _, done, total in reports])


def test_mesh_eval_help_lists_the_perturbations():
    from sv3d_trt.mesh.perturb import PERTURB

    result = CliRunner().invoke(main, ["mesh-eval", "--help"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"[{'|'.join(PERTURB)}]" in text and "[default: none]" in text
    assert "--quality [draft|default|high]" in text and "[default: the preset's]" in text


def test_mesh_takes_a_result_folder_with_one_orbit(tmp_path, write_orbit):
    """`sv3d-trt demo --out D` writes D/orbit/...; `sv3d-trt mesh D` finds it (as it would D/orbit)."""
    write_orbit(tmp_path / "demo" / "orbit")
    result = CliRunner().invoke(main, ["mesh", str(tmp_path / "demo"), "--out", str(tmp_path / "m.glb"),
                                       "--quality", "draft", "--iters", "4", "--resolution", "32"])
    assert result.exit_code == 0, result.output
    assert f"frames: {tmp_path / 'demo' / 'orbit'}" in result.output and (tmp_path / "m.glb").is_file()


def test_mesh_refuses_a_folder_with_several_orbits(tmp_path, write_orbit):
    for name in ("a", "b"):
        write_orbit(tmp_path / "runs" / name, size=16)
    result = CliRunner().invoke(main, ["mesh", str(tmp_path / "runs"), "--out", str(tmp_path / "m.glb")])
    assert result.exit_code == 1
    assert f"error: {tmp_path / 'runs'} holds 2 orbits (a, b); pass one of them as FRAMES_DIR" in result.output
    assert not (tmp_path / "m.glb").exists()


def test_unusable_device_is_one_line(tmp_path, write_orbit):
    """cuda:99 exists nowhere: on a CPU machine no driver, on a GPU machine too few devices; never a traceback."""
    write_orbit(tmp_path / "orbit", size=16)
    for command in (["mesh", str(tmp_path / "orbit"), "--out", str(tmp_path / "m.glb")], ["mesh-eval", "sphere"]):
        result = CliRunner().invoke(main, [*command, "--device", "cuda:99"])
        assert result.exit_code == 1, result.output
        assert "error: --device cuda:99: " in result.output and "Traceback" not in result.output
    assert not (tmp_path / "m.glb").exists()

"""The command line as a user runs it: make-checkpoint -> generate, errors as one line."""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys

import imageio.v3 as iio
import pytest
from click.testing import CliRunner

from sv3d_trt.cli import main


def test_help_lists_the_commands():
    out = CliRunner().invoke(main, ["--help"]).output
    for command in ("make-checkpoint", "generate", "demo"):
        assert command in out


def test_make_checkpoint_then_generate(tmp_path, example_image):
    runner = CliRunner()
    ck = tmp_path / "ck.safetensors"
    r = runner.invoke(main, ["make-checkpoint", "--config", "tiny", "--variant", "sv3d_p", str(ck)])
    assert r.exit_code == 0, r.output
    out = tmp_path / "out"
    r = runner.invoke(main, ["generate", str(example_image), "--checkpoint", str(ck), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.glob("frame_*.png")) == [f"frame_{i:03d}.png" for i in range(21)]
    assert iio.imread(out / "orbit.mp4").shape[0] == 21
    assert (out / "orbit.gif").stat().st_size > 0
    cams = json.loads((out / "cameras.json").read_text())
    assert len(cams["frames"]) == 21


def test_errors_are_one_clear_line(tmp_path, example_image, tiny_checkpoint_u):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x80\x04 not a safetensors file")
    r = CliRunner().invoke(main, ["generate", str(example_image), "--checkpoint", str(bad), "--out", str(tmp_path)])
    assert r.exit_code == 1 and "pickled PyTorch checkpoint" in r.output
    r = CliRunner().invoke(main, ["generate", str(example_image), "--checkpoint", str(tiny_checkpoint_u),
                                  "--orbit", "dynamic", "--out", str(tmp_path / "u")])
    assert r.exit_code == 1 and "sv3d_u" in r.output


def test_bad_orbit_is_rejected_before_any_progress(tmp_path, example_image, tiny_checkpoint):
    """generate and run check the cameras before loading or denoising: one line, no stage lines."""
    for args in (["generate", str(example_image), "--checkpoint", str(tiny_checkpoint)],
                 ["run", str(example_image), "--checkpoint", str(tiny_checkpoint)]):
        r = CliRunner().invoke(main, [*args, "--orbit", "bogus", "--out", str(tmp_path / args[0])])
        assert r.exit_code == 1, r.output
        assert r.output.strip().splitlines() == [
            "error: orbit file bogus not found (use 'static', 'dynamic' or a JSON file)"], r.output
        assert not (tmp_path / args[0]).exists()


def test_progress_is_a_line_per_stage_off_a_terminal(tmp_path, example_image, tiny_checkpoint):
    r = CliRunner().invoke(main, ["generate", str(example_image), "--checkpoint", str(tiny_checkpoint),
                                  "--steps", "2", "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    ends = [line for line in re.sub(r"\d+\.\d s", "T", r.output).splitlines() if line.endswith("done in T")]
    assert ends == [f"load {tiny_checkpoint}: done in T", "encode, denoise mug_rgba.png: 2/2 done in T",
                    "decode mug_rgba.png: done in T", f"save {tmp_path / 'out'}: done in T"], r.output


def test_demo_says_its_frames_are_noise(tmp_path):
    out = tmp_path / "demo_out"
    r = CliRunner().invoke(main, ["demo", "--out", str(out), "--steps", "2"])
    assert r.exit_code == 0, r.output
    assert len(list((out / "orbit").glob("frame_*.png"))) == 21  # where the README says they are
    assert f"The frames in {out / 'orbit'} are noise because the demo's checkpoint is random" in r.output
    assert "sv3d-trt generate" in r.output and "--checkpoint sv3d_p.safetensors" in r.output


# ---- nothing lost, nothing mixed, no traceback --------------------------------------------------


def _generate(image, checkpoint, out, *extra):
    return CliRunner().invoke(main, ["generate", str(image), "--checkpoint", str(checkpoint), "--out", str(out),
                                     "--steps", "2", *extra])


def test_generate_replaces_a_result_whole_and_records_the_run(tmp_path, example_image, tiny_checkpoint):
    out = tmp_path / "out"
    assert _generate(example_image, tiny_checkpoint, out, "--seed", "1").exit_code == 0
    first = (out / "frame_000.png").read_bytes()
    (out / "frame_099.png").write_bytes(first)  # a stray frame: gone once the next result lands
    r = _generate(example_image, tiny_checkpoint, out, "--seed", "2")
    assert r.exit_code == 0, r.output
    assert not (out / "frame_099.png").exists() and (out / "frame_000.png").read_bytes() != first
    info = json.loads((out / "run.json").read_text())
    assert info["settings"]["seed"] == 2 and info["settings"]["steps"] == 2
    assert info["inputs"]["image"]["sha256"] == hashlib.sha256(example_image.read_bytes()).hexdigest()
    assert info["inputs"]["model"]["bytes"] == tiny_checkpoint.stat().st_size
    assert info["versions"]["sv3d_trt"] and info["backend"]["backend"] == "torch-eager"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging folder or lock left


@pytest.mark.parametrize("case", ["file_above", "foreign_folder"])
def test_generate_refuses_an_unusable_out_before_loading(tmp_path, example_image, tiny_checkpoint, case):
    if case == "file_above":
        (tmp_path / "a_file").write_text("x")
        out, message = tmp_path / "a_file" / "out", "a file is in the way"
    else:
        out, message = tmp_path / "photos", "holds other files and no earlier result"
        out.mkdir()
        (out / "holiday.jpg").write_text("keep")
    r = _generate(example_image, tiny_checkpoint, out)
    assert r.exit_code == 1 and message in r.output, r.output
    assert "load" not in r.output and "Traceback" not in r.output  # refused before any stage ran
    if case == "foreign_folder":
        assert (out / "holiday.jpg").read_text() == "keep"


@pytest.mark.parametrize("command", ["generate", "run", "demo"])
def test_one_step_is_refused_the_same_way_everywhere(tmp_path, example_image, tiny_checkpoint, command):
    args = {"generate": ["generate", str(example_image), "--checkpoint", str(tiny_checkpoint)],
            "run": ["run", str(example_image), "--checkpoint", str(tiny_checkpoint)], "demo": ["demo"]}[command]
    r = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "o"), "--steps", "1"])
    assert r.exit_code == 2 and "Invalid value for '--steps': 1 is not in the range 2<=x<=1000" in r.output


def test_devices_are_checked_before_weights_load(tmp_path, example_image, tiny_checkpoint):
    import torch

    r = _generate(example_image, tiny_checkpoint, tmp_path / "o", "--device", "tpu")
    assert r.exit_code == 2 and "unknown device 'tpu': use cpu, cuda or cuda:N" in r.output
    missing = "cuda:99" if torch.cuda.is_available() else "cuda"
    r = _generate(example_image, tiny_checkpoint, tmp_path / "o", "--device", missing)
    assert r.exit_code == 1 and r.output.splitlines()[-1].startswith(f"error: --device {missing}: "), r.output
    assert ("visible" if torch.cuda.is_available() else "finds no NVIDIA GPU or driver") in r.output
    assert not (tmp_path / "o").exists()


def test_a_missing_extra_names_the_install_command(tmp_path, tiny_checkpoint):
    code = ("import sys\nsys.modules['onnx_ir'] = None  # as if the onnx extra were not installed\n"
            "from sv3d_trt.cli import main\n"
            f"main(['export', '--checkpoint', {str(tiny_checkpoint)!r}, '--out', {str(tmp_path / 'onnx')!r}])\n")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert child.returncode == 1, child.stderr
    assert "the onnx extra, which is not installed (no module 'onnx_ir')" in child.stderr
    assert 'pip install -e ".[onnx]"' in child.stderr and "Traceback" not in child.stderr


@pytest.mark.parametrize("stem", [".", ".."])
def test_run_output_names_stay_inside_out(tmp_path, example_image, tiny_checkpoint, stem):
    """`..png` (stem '.') once resolved to --out itself and deleted it; `...png` left '....old-*'."""
    image = tmp_path / f"{stem}.png"
    image.write_bytes(example_image.read_bytes())
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.txt").write_text("keep")
    r = CliRunner().invoke(main, ["run", str(image), "--checkpoint", str(tiny_checkpoint), "--out", str(out),
                                  "--steps", "2"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["earlier.txt", "image"]
    assert (out / "earlier.txt").read_text() == "keep" and len(list((out / "image").glob("frame_*.png"))) == 21
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([image.name, "out"])

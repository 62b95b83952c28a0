"""The command line as a user runs it: make-checkpoint -> generate, errors as one line."""
from __future__ import annotations

import json

import imageio.v3 as iio
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

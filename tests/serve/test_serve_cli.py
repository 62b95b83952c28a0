"""`sv3d-trt serve` option errors: one line, before Ray starts."""
from __future__ import annotations

from click.testing import CliRunner

from sv3d_trt.cli import main


def test_serve_option_errors(tiny_checkpoint, tmp_path):
    runner = CliRunner()
    none = runner.invoke(main, ["serve"])
    assert none.exit_code == 2 and "exactly one of --artifacts DIR and --checkpoint CKPT" in none.output
    cases = [
        (["--autoscale", "3"], "error: --autoscale expects MIN:MAX (e.g. 1:4), got '3'"),
        (["--autoscale", "3:1"], "error: --autoscale MIN:MAX needs 0 <= MIN <= MAX"),
        (["--parallel", "cfg", "--backend", "ort"], "error: --parallel cfg runs the torch-eager backend only"),
    ]
    for args, message in cases:
        result = runner.invoke(main, ["serve", "--checkpoint", str(tiny_checkpoint), *args])
        assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output, result.output

    junk = tmp_path / "notes.safetensors"
    junk.write_bytes(b"not a checkpoint at all")
    result = runner.invoke(main, ["serve", "--checkpoint", str(junk)])  # refused before Ray starts
    assert result.exit_code == 1 and result.output.startswith("error: ") and "notes.safetensors" in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output

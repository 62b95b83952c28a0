"""sv3d_trt.progress: a line per stage with its elapsed seconds off a terminal, rich bars on one."""
from __future__ import annotations

import io
import re

import pytest

from sv3d_trt.progress import Progress


def _lines(f: io.StringIO) -> list[str]:
    return f.getvalue().splitlines()


def test_a_stage_is_a_start_line_and_an_end_line_with_seconds():
    f = io.StringIO()
    with Progress(file=f) as progress:
        with progress.stage("load ck.safetensors"):
            assert _lines(f) == ["load ck.safetensors ..."]  # written when the stage starts
        with progress.stage("denoise", total=3) as advance:
            for _ in range(3):
                advance()
    lines = _lines(f)
    assert re.fullmatch(r"load ck\.safetensors: done in \d+\.\d s", lines[1])
    assert lines[2] == "denoise ..."
    assert re.fullmatch(r"denoise: 3/3 done in \d+\.\d s", lines[3])
    assert len(lines) == 4  # no per-step lines within the heartbeat


def test_heartbeat_lines_while_a_counted_stage_runs():
    f = io.StringIO()
    with Progress(file=f, heartbeat_s=0.0) as progress, progress.stage("steps", total=2) as advance:
        advance()
        advance()
    assert [re.sub(r"\d+\.\d s", "T", line) for line in _lines(f)] == [
        "steps ...", "steps: 1/2 T", "steps: 2/2 done in T"]  # no heartbeat right before the end line


def test_report_starts_a_stage_per_description_and_finish_ends_it():
    f = io.StringIO()
    with Progress(file=f) as progress:
        for stage, done in [("carve", 1), ("optimise", 1), ("optimise", 2)]:
            progress.report(stage, done, 2)
        progress.finish()
        progress.print("wrote mesh.glb")
        progress.report("export clip.onnx", 0, 1)
        progress.report("export clip.onnx", 1, 1)  # done == total: ended now, not by the next stage
        progress.print("clip.onnx: 12 nodes")
        progress.report("bake", 1, None)  # still open: ended by the exit
    text = [re.sub(r"\d+\.\d s", "T", line) for line in _lines(f)]
    assert text == ["carve ...", "carve: 1/2 done in T", "optimise ...", "optimise: 2/2 done in T",
                    "wrote mesh.glb", "export clip.onnx ...", "export clip.onnx: done in T", "clip.onnx: 12 nodes",
                    "bake ...", "bake: done in T"]


def test_a_failed_stage_says_so():
    f = io.StringIO()
    with pytest.raises(KeyError), Progress(file=f) as progress, progress.stage("export clip"):
        raise KeyError("boom")
    assert re.fullmatch(r"export clip: stopped after \d+\.\d s", _lines(f)[-1])


def test_rich_task_api_as_tensorrt_drives_it():
    """TensorRT's build monitor: add_task / update / remove_task, unknown ids ignored."""
    f = io.StringIO()
    with Progress(file=f) as progress:
        task = progress.add_task("  Building engine", total=5)
        progress.update(task, completed=5)
        progress.remove_task(task)
        progress.update(task, completed=1)  # after removal: no effect, no error
        progress.remove_task(task)
    assert len(_lines(f)) == 2 and re.fullmatch(r"  Building engine: 5/5 done in \d+\.\d s", _lines(f)[1])


def test_bars_on_a_terminal():
    f = io.StringIO()
    progress = Progress(file=f, live=True)
    assert progress.live and not Progress(file=io.StringIO()).live  # default: bars only on a terminal
    with progress:
        with progress.stage("denoise", total=4) as advance:
            advance(4)
        progress.print("ok mug.png")
    out = f.getvalue()
    assert "ok mug.png" in out and "denoise" in out and "4/4" in out
    assert "done in" not in out  # the bars, not the plain lines

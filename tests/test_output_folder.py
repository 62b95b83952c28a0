"""Result folders: names from user input stay inside --out, results appear whole or not at all,
a second writer is refused, and an unwritable destination is found before any work."""
from __future__ import annotations

import os
import subprocess
import sys
import shutil
from pathlib import Path

import pytest

from sv3d_trt.errors import OutputError
from sv3d_trt.output_folder import check_destination, safe_name, staged_folder, unique_names


@pytest.mark.parametrize("stem, name", [
    (".", "image"), ("..", "image"), ("...", "image"), ("", "image"), (" . ", "image"),
    (".hidden", "hidden"), ("a/b", "a_b"), ("a\\b", "a_b"), ("tab\there", "tab_here"), ("cat", "cat"),
])
def test_safe_name_never_leaves_the_parent(tmp_path, stem, name):
    assert safe_name(stem) == name
    assert (tmp_path / safe_name(stem)).resolve().parent == tmp_path.resolve()


def test_unique_names_avoid_suffix_and_case_clashes():
    assert unique_names(["cat", "cat", "cat-2", "Cat", ".", ".."]) == ["cat", "cat-2", "cat-2-2", "Cat-3", "image",
                                                                        "image-2"]


def _result(folder: Path, tag: str) -> None:
    for i in range(3):
        (folder / f"frame_{i:03d}.png").write_text(tag)
    (folder / "run.json").write_text(tag)


def test_staged_folder_publishes_whole_and_keeps_the_old_result_on_interrupt(tmp_path):
    dest = tmp_path / "out" / "cat"
    with staged_folder(dest) as staging:
        assert staging.parent == dest.parent and not dest.exists()
        _result(staging, "first")
    assert {p.read_text() for p in dest.iterdir()} == {"first"}
    with pytest.raises(KeyboardInterrupt):
        with staged_folder(dest) as staging:
            (staging / "frame_000.png").write_text("second")
            raise KeyboardInterrupt  # Ctrl-C while saving
    assert {p.read_text() for p in dest.iterdir()} == {"first"}  # never a mix of the two runs
    assert sorted(p.name for p in dest.parent.iterdir()) == ["cat"]  # no staging folder, no lock left
    with staged_folder(dest) as staging:
        (staging / "run.json").write_text("third")
    assert [p.name for p in dest.iterdir()] == ["run.json"]  # replaced whole: no stale frames


def test_a_second_writer_is_refused_while_the_first_runs(tmp_path):
    dest = tmp_path / "cat"
    with staged_folder(dest):
        with pytest.raises(OutputError, match=rf"being written by another sv3d-trt run \(pid {os.getpid()}\)"):
            with staged_folder(dest):
                pass
        code = ("import sys\nfrom sv3d_trt.output_folder import staged_folder\nfrom sv3d_trt.errors import "
                f"OutputError\ntry:\n    with staged_folder({str(dest)!r}): pass\nexcept OutputError as e:\n"
                "    print(e); sys.exit(3)\n")
        child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert child.returncode == 3 and "another sv3d-trt run" in child.stdout, child.stderr
    with staged_folder(dest) as staging:  # released: the next run goes ahead
        _result(staging, "next")


def test_unusable_destinations_are_refused_before_work(tmp_path, monkeypatch):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_destination(a_file)
    with pytest.raises(OutputError, match="a file is in the way"):
        check_destination(a_file / "out")
    theirs = tmp_path / "photos"
    theirs.mkdir()
    (theirs / "holiday.jpg").write_text("keep me too")
    with pytest.raises(OutputError, match="holds other files and no earlier result"):
        check_destination(theirs)
    monkeypatch.chdir(theirs)
    with pytest.raises(OutputError, match="current folder or one above it"):
        check_destination(".")
    with pytest.raises(OutputError, match="current folder or one above it"):
        check_destination("..")
    assert a_file.read_text() == "keep me" and (theirs / "holiday.jpg").read_text() == "keep me too"


def _unprivileged(argv: list[str]) -> list[str]:
    """argv run so that permission bits apply: as is for a normal user; for root, without the
    capabilities that let root write anywhere (setpriv, util-linux)."""
    if os.geteuid() != 0:
        return argv
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permission bits cannot be made to apply")
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", "--", *argv]


def test_read_only_parent_is_refused_before_work(tmp_path):
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    code = ("import sys\nfrom sv3d_trt.output_folder import staged_folder\nfrom sv3d_trt.errors import "
            f"OutputError\ntry:\n    with staged_folder({str(read_only / 'cat')!r}): print('body ran')\n"
            "except OutputError as e:\n    print(e); sys.exit(3)\n")
    child = subprocess.run(_unprivileged([sys.executable, "-c", code]), capture_output=True, text=True, timeout=60)
    read_only.chmod(0o755)
    assert child.returncode == 3 and "is not writable" in child.stdout, (child.stdout, child.stderr)
    assert "body ran" not in child.stdout

"""Result folders: safe names, checked before work, written whole or not at all.

A result (frames, videos, cameras.json, run.json, ...) is assembled in a hidden staging folder
beside its destination and renamed onto it only when complete, so an interrupt or a failure
never leaves a folder that mixes two runs. A lock file beside the destination refuses a second
writer while the first is running; the lock is an flock, so a killed process never leaves a
stale one. An existing destination is replaced only when it is empty or an earlier result:
a folder of someone's other files is never deleted.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import OutputError

# Written by every sv3d-trt result (run.json since generate writes one too; cameras.json always).
RESULT_MARKERS = ("run.json", "cameras.json")


def safe_name(name: str, fallback: str = "image") -> str:
    """A folder name derived from user input that stays one level inside its parent.

    Separators and control characters become "_"; leading dots are dropped (an image `..png`
    has the stem ".", `...png` has ".."; a hidden name would also clash with staging folders).
    """
    cleaned = "".join("_" if c in "/\\" or ord(c) < 32 else c for c in name).strip().lstrip(".").strip()
    return cleaned or fallback


def unique_names(stems: list[str]) -> list[str]:
    """safe_name of each stem, made unique (case-insensitively) with -2, -3, ..."""
    names, taken = [], set()
    for stem in stems:
        base = name = safe_name(stem)
        n = 1
        while name.casefold() in taken:
            n += 1
            name = f"{base}-{n}"
        taken.add(name.casefold())
        names.append(name)
    return names


def check_destination(dest: str | os.PathLike, markers: tuple[str, ...] = RESULT_MARKERS) -> Path:
    """The absolute destination, or OutputError now (before any work) when it cannot be written.
    An existing non-empty folder must hold one of `markers` (it is an earlier result)."""
    dest = Path(os.path.abspath(dest))  # normalises "..": the name is the folder's own
    if Path.cwd().resolve().is_relative_to(dest.resolve()):
        raise OutputError(f"{dest} is the current folder or one above it; give a new folder for the result")
    if dest.exists() and not dest.is_dir():
        raise OutputError(f"{dest} is a file, not a folder; give a folder for the result")
    if dest.is_dir() and any(dest.iterdir()) and not any((dest / m).is_file() for m in markers):
        raise OutputError(f"{dest} holds other files and no earlier result (no {' or '.join(markers)}); "
                          "give a new or empty folder, it is replaced whole")
    parent = dest.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputError(f"cannot create {dest}: a file is in the way above it") from None
    except OSError as e:
        raise OutputError(f"cannot create {parent}: {e.strerror}") from None
    for folder in (parent, dest) if dest.is_dir() else (parent,):  # replacing dest renames it
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputError(f"{folder} is not writable")
    return dest


@contextlib.contextmanager
def _lock(dest: Path) -> Iterator[None]:
    """Hold an exclusive flock on DEST's lock file (.DEST.lock beside it) or raise OutputError."""
    path = dest.parent / f".{dest.name}.lock"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise OutputError(f"{dest} is being written by another sv3d-trt run ({holder}); "
                              "wait for it to finish or choose another output folder") from None
        try:  # the holder we waited on may have removed the file: lock the one that is there now
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def _publish(staging: Path, dest: Path) -> None:
    """Move a complete staging folder onto `dest`, replacing an earlier result."""
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes 0700; give the usual mode
    old = None
    if dest.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
        dest.replace(old / dest.name)
    staging.replace(dest)
    if old is not None:
        shutil.rmtree(old)


@contextlib.contextmanager
def staged_folder(dest: str | os.PathLike, markers: tuple[str, ...] = RESULT_MARKERS) -> Iterator[Path]:
    """Check and lock `dest`, yield an empty staging folder beside it, and move that onto `dest`
    when the body succeeds. On any error or interrupt the staging folder is removed and `dest`
    is left as it was. Raises OutputError before the body runs when `dest` cannot be written
    (markers: see check_destination; an engine folder's is manifest.json)."""
    dest = check_destination(dest, markers)
    with _lock(dest):
        try:
            staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
        except OSError as e:
            raise OutputError(f"cannot write in {dest.parent}: {e.strerror}") from None
        try:
            yield staging
            _publish(staging, dest)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

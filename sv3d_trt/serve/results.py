"""The ingress's results store: one folder per finished job, written whole and moved into place.

A job's files are assembled in a hidden staging folder (every file written atomically by
sv3d_trt.outputs / sv3d_trt.fileio) and renamed to <root>/<job id> when complete, so a reader
never sees half a result. The job table's retention decides when a folder is deleted.
"""
from __future__ import annotations

import io
import re
import shutil
import tempfile
import zipfile
from pathlib import Path

from ..fileio import write_bytes_atomic, write_json_atomic
from ..output_folder import staged_folder
from ..outputs import frame_filename, save_outputs
from ..runtime.batch import RUN_INFO
from ..viewer import write_page

FRAMES_ZIP = "frames.zip"
RESULT_FILES = (FRAMES_ZIP, "orbit.mp4", "orbit.gif", "cameras.json", "mesh.glb", RUN_INFO)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # one file in a job's folder, no path


class ResultsStore:
    def __init__(self, root: str | Path | None = None):
        self._tmp = None if root else tempfile.TemporaryDirectory(prefix="sv3d-serve-results-")
        self.root = Path(root or self._tmp.name)
        self.root.mkdir(parents=True, exist_ok=True)

    def write(self, job_id: str, frames, cameras: dict, input_rgb, run_info: dict,
              extra: dict[str, bytes] | None = None) -> list[str]:
        """Write a job's results (and its viewer page); returns the names of RESULT_FILES it holds."""
        with staged_folder(self.root / job_id) as staging:
            paths = save_outputs(staging, frames, cameras, input_rgb)
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:  # PNGs are compressed
                for i, path in enumerate(paths["frames"]):
                    archive.write(path, frame_filename(i))
                archive.write(paths["cameras"], "cameras.json")
            write_bytes_atomic(staging / FRAMES_ZIP, buffer.getvalue())
            for name, data in (extra or {}).items():
                write_bytes_atomic(staging / name, data)
            write_json_atomic(staging / RUN_INFO, run_info)
            write_page(staging)  # index.html: frames by relative URL, served beside it
        return [name for name in RESULT_FILES if (self.root / job_id / name).is_file()]

    def path(self, job_id: str, name: str) -> Path | None:
        """The file `name` of a job (a result, a frame PNG, input.png), None when absent."""
        if not (_SAFE_NAME.match(job_id) and _SAFE_NAME.match(name)):
            return None
        path = self.root / job_id / name
        return path if path.is_file() else None

    def delete(self, job_id: str) -> None:
        if _SAFE_NAME.match(job_id):
            shutil.rmtree(self.root / job_id, ignore_errors=True)

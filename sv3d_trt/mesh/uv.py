"""UV atlas with xatlas, run in a child process on a mesh decimated to at most `max_faces`.

xatlas takes ~10 s for 56K faces on 2 cores and crashes outright on some ~80K-face meshes
(mesh.md), so the mesh is first coarsened with the remesher's collapses and xatlas runs in a
subprocess: a crash becomes a typed error instead of taking the whole process down.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from .mesh_io import MeshError
from .remesh import calc_edges, collapse_edges

MAX_UV_FACES = 20_000


def decimate(vertices: torch.Tensor, faces: torch.Tensor, max_faces: int = MAX_UV_FACES):
    """Collapse edges with a growing target length until len(faces) <= max_faces -> (vertices, faces)."""
    for _ in range(20):
        if len(faces) <= max_faces:
            break
        edges, _ = calc_edges(faces)
        mean_edge = float((vertices[edges[:, 0]] - vertices[edges[:, 1]]).norm(dim=-1).mean())
        # Face count scales with 1 / edge length^2; overshoot a little so few rounds suffice.
        target = torch.full((len(vertices),), 1.15 * mean_edge * (len(faces) / max_faces) ** 0.5,
                            device=vertices.device)
        count = len(faces)
        vertices, faces, _, _ = collapse_edges(vertices, faces, {}, target)
        if len(faces) == count:
            break
    return vertices, faces


def _worker(src: str, dst: str) -> None:
    import xatlas

    data = np.load(src)
    atlas = xatlas.Atlas()
    atlas.add_mesh(data["vertices"], data["faces"])
    pack = xatlas.PackOptions()
    pack.resolution = int(data["resolution"])
    pack.padding = 2
    pack.bilinear = True
    atlas.generate(pack_options=pack)
    vmapping, indices, uvs = atlas[0]
    np.savez(dst, vmapping=vmapping.astype(np.int64), faces=indices.astype(np.int64), uvs=uvs.astype(np.float32))


def unwrap(vertices: np.ndarray, faces: np.ndarray, resolution: int, timeout: float = 300.0):
    """xatlas in a subprocess -> vmapping (V',) into vertices, faces (F, 3) into V', uvs (V', 2) in [0, 1]."""
    with tempfile.TemporaryDirectory(prefix="sv3d_uv_") as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(src, vertices=vertices.astype(np.float32), faces=faces.astype(np.uint32), resolution=resolution)
        try:
            proc = subprocess.run([sys.executable, "-m", "sv3d_trt.mesh.uv", str(src), str(dst)],
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise MeshError(f"xatlas did not finish within {timeout:.0f} s on {len(faces)} faces") from None
        if proc.returncode != 0 or not dst.is_file():
            tail = (proc.stderr or "").strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
            raise MeshError(f"xatlas failed on a {len(faces)}-face mesh: {tail[0]}")
        out = np.load(dst)
        return out["vmapping"], out["faces"], out["uvs"]


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2])

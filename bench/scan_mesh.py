"""Write the Stanford bunny that warp-lang ships (warp/examples/assets/bunny.usd, a real range scan, closed,
12,200 triangles) as a PLY for `sv3d-trt mesh-eval`: a held-out scanned shape next to the procedural ones.

    pip install usd-core        # the USD reader; needed only for this conversion
    python bench/scan_mesh.py bunny.ply
    sv3d-trt mesh-eval bunny.ply --json bunny.json [--perturb default]

The file is y-up; it is turned z-up (the SV3D world frame) so the orbit circles it as it sits.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import trimesh
import warp
from pxr import Usd, UsdGeom


def bunny() -> trimesh.Trimesh:
    stage = Usd.Stage.Open(str(Path(warp.__file__).parent / "examples" / "assets" / "bunny.usd"))
    mesh = next(UsdGeom.Mesh(p) for p in stage.Traverse() if p.GetTypeName() == "Mesh")
    points = np.asarray(mesh.GetPointsAttr().Get(), dtype=np.float64)
    faces = np.asarray(mesh.GetFaceVertexIndicesAttr().Get(), dtype=np.int64).reshape(-1, 3)
    out = trimesh.Trimesh(points, faces, process=True)
    out.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))  # y-up -> z-up
    if out.volume < 0:
        out.invert()
    return out


if __name__ == "__main__":
    bunny().export(sys.argv[1])

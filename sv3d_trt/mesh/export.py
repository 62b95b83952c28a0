"""Writing the textured mesh: GLB with the texture embedded, or OBJ + MTL + PNG side by side."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh
from PIL import Image

from ..fileio import write_bytes_atomic
from .mesh_io import MeshError

FORMATS = (".glb", ".obj")


def textured_trimesh(vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray, texture: np.ndarray) -> trimesh.Trimesh:
    """vertices (V, 3), faces (F, 3), uvs (V, 2) with v up, texture (T, T, 3) uint8 with row 0 at the top."""
    material = trimesh.visual.material.PBRMaterial(baseColorTexture=Image.fromarray(texture), metallicFactor=0.0,
                                                   roughnessFactor=1.0)
    visual = trimesh.visual.TextureVisuals(uv=uvs, material=material)
    return trimesh.Trimesh(vertices=vertices, faces=faces, visual=visual, process=False)


def check_format(path: str | Path) -> str:
    """The lower-case suffix of a mesh path, or MeshError when it is not one of FORMATS."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise MeshError(f"unsupported mesh format {Path(path).suffix!r}; use one of {FORMATS}")
    return suffix


def write_mesh(path: str | Path, mesh: trimesh.Trimesh) -> list[Path]:
    """Write by suffix (.glb or .obj); returns every file written (OBJ also writes .mtl and .png)."""
    path = Path(path)
    suffix = check_format(path)
    if suffix == ".glb":
        write_bytes_atomic(path, mesh.export(file_type="glb"))
        return [path]
    text, files = trimesh.exchange.obj.export_obj(mesh, include_texture=True, return_texture=True,
                                                  mtl_name=f"{path.stem}.mtl")
    written = []
    for name, data in files.items():
        write_bytes_atomic(path.parent / name, data)
        written.append(path.parent / name)
    write_bytes_atomic(path, text.encode())
    return [path, *written]

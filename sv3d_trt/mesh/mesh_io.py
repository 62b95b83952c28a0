"""Reading mesh files for evaluation, and the mesh stage's error type."""
from __future__ import annotations

from pathlib import Path

import trimesh

from ..errors import MeshError


def load_watertight(path: str | Path) -> trimesh.Trimesh:
    """One watertight triangle mesh from OBJ/PLY/GLB/STL (scenes are merged into one mesh)."""
    path = Path(path)
    if not path.is_file():
        raise MeshError(f"mesh file {path} not found")
    try:
        mesh = trimesh.load(path, force="mesh", process=True)
    except Exception as e:  # trimesh raises many unrelated types for bad files
        raise MeshError(f"mesh file {path} is unreadable: {e}") from None
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise MeshError(f"mesh file {path} holds no triangles")
    if isinstance(mesh.visual, trimesh.visual.TextureVisuals):
        # Texture seams split vertices; colours sampled per vertex survive the merge below.
        mesh.visual = mesh.visual.to_color()
    mesh.merge_vertices(merge_tex=True, merge_norm=True)
    if not mesh.is_watertight:
        raise MeshError(f"mesh file {path} is not watertight: volume scores need a closed surface")
    if mesh.volume < 0:
        mesh.invert()
    return mesh

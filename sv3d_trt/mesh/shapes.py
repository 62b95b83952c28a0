"""Procedural test shapes for the evaluation harness, all watertight and normalised (mesh.md).

The torus stands on its rim (axis along y) so the SV3D orbit, which circles near the equator,
looks through its hole from azimuths 90 and 270 degrees. The composite is an SDF union (a box
with a sphere on top and a handle through a side), meshed by marching cubes, so it is watertight
and genuinely non-convex. The textured sphere carries smooth per-vertex colours.
"""
from __future__ import annotations

import numpy as np
import trimesh
from skimage import measure

SHAPES = ("sphere", "torus", "box", "composite", "textured_sphere")


def normalise(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """Copy with its bounding box centred at the origin and its largest side 1 (mesh.md scoring)."""
    out = mesh.copy()
    lo, hi = out.bounds
    out.apply_translation(-(lo + hi) / 2.0)
    out.apply_scale(1.0 / float((hi - lo).max()))
    return out


def _composite(resolution: int = 128) -> trimesh.Trimesh:
    axis = np.linspace(-0.6, 0.6, resolution)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    q = np.abs(np.stack([x, y, z + 0.15], -1)) - np.array([0.3, 0.22, 0.2])
    box = np.linalg.norm(np.maximum(q, 0.0), axis=-1) + np.minimum(q.max(-1), 0.0)
    ball = np.sqrt(x ** 2 + y ** 2 + (z - 0.2) ** 2) - 0.2
    ring = np.sqrt((np.sqrt((x - 0.3) ** 2 + (z + 0.1) ** 2) - 0.17) ** 2 + y ** 2) - 0.05  # handle in the xz-plane
    sdf = np.minimum(np.minimum(box, ball), ring)
    step = axis[1] - axis[0]
    verts, faces, _, _ = measure.marching_cubes(sdf, level=0.0, spacing=(step, step, step))
    mesh = trimesh.Trimesh(verts - 0.6, faces[:, ::-1], process=True)  # flip: SDF gradient points outward
    if mesh.volume < 0:
        mesh.invert()
    return mesh


def _pattern(points: np.ndarray) -> np.ndarray:
    """Smooth, saturated colours (no white, so the key never eats them), (V, 3) uint8."""
    x, y, z = points.T * 2.0
    rgb = np.stack([0.5 + 0.3 * np.sin(3.0 * x + 1.0), 0.45 + 0.3 * np.sin(2.5 * y + 2.0 * z),
                    0.4 + 0.3 * np.cos(3.0 * z - x)], axis=-1)
    return (np.clip(rgb, 0.0, 0.85) * 255).astype(np.uint8)


def procedural_shape(name: str) -> trimesh.Trimesh:
    """One of SHAPES as a normalised trimesh (the textured sphere with vertex colours)."""
    if name == "sphere":
        mesh = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    elif name == "textured_sphere":
        mesh = trimesh.creation.icosphere(subdivisions=5, radius=0.5)
        mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=_pattern(mesh.vertices))
    elif name == "torus":
        mesh = trimesh.creation.torus(major_radius=0.35, minor_radius=0.15, major_sections=64, minor_sections=32)
        mesh.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))
    elif name == "box":
        mesh = trimesh.creation.box(extents=(0.8, 0.6, 1.0))
    elif name == "composite":
        mesh = _composite()
    else:
        raise ValueError(f"unknown shape {name!r}; expected one of {SHAPES}")
    return normalise(mesh)

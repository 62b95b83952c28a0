"""Shape and albedo regularisers on closed triangle meshes (pure functions, torch autograd)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .remesh import calc_edges


def uniform_laplacian(values: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """values (V, C) minus the mean of their one-ring neighbours -> (V, C)."""
    total = torch.zeros_like(values).index_add(0, edges[:, 0], values[edges[:, 1]])
    total = total.index_add(0, edges[:, 1], values[edges[:, 0]])
    degree = torch.bincount(edges.reshape(-1), minlength=len(values)).clamp_min(1)[:, None]
    return values - total / degree


def laplacian_energy(vertices: torch.Tensor, edges: torch.Tensor, scale: float) -> torch.Tensor:
    """Mean squared uniform Laplacian in units of `scale` (the target edge length), so the weight
    does not depend on how finely the surface is meshed. edges (E, 2) from `calc_edges`."""
    return (uniform_laplacian(vertices, edges) / scale).pow(2).sum(-1).mean()


def adjacent_faces(faces: torch.Tensor) -> torch.Tensor:
    """(E, 2) the two faces beside each edge of a closed manifold mesh."""
    _, face_edges = calc_edges(faces)
    order = torch.argsort(face_edges.reshape(-1))  # each edge appears exactly twice
    return torch.arange(len(faces), device=faces.device).repeat_interleave(3)[order].reshape(-1, 2)


def normal_consistency(vertices: torch.Tensor, faces: torch.Tensor, pairs: torch.Tensor,
                       crease_degrees: float | None = None) -> torch.Tensor:
    """Mean 1 - cos of the angle between the normals of faces sharing an edge (pairs from `adjacent_faces`).

    crease_degrees: robust instead (Geman-McClure): d = 1 - cos becomes c d / (c + d) with c = 1 - cos(crease),
    equal to d for small angles but levelling off beyond the crease angle, so a box's 90-degree edges pull
    with a seventieth of the force a smooth bend of that angle would: they stay sharp while noise is smoothed.
    """
    v0, v1, v2 = vertices[faces].unbind(1)
    normals = F.normalize(torch.cross(v1 - v0, v2 - v0, dim=-1), dim=-1, eps=1e-12)  # (F, 3)
    bend = 1.0 - (normals[pairs[:, 0]] * normals[pairs[:, 1]]).sum(-1)
    if crease_degrees is not None:
        c = 1.0 - math.cos(math.radians(crease_degrees))
        bend = c * bend / (c + bend)
    return bend.mean()

"""Vertices no camera sees, and a minimal-surface guess for them.

An orbit near the equator never sees an object's underside, and the visual hull there bulges down
to wherever the viewing cones meet (for a box seen from 10 degrees elevation, 20 % of its height).
Neither masks nor colours can move those vertices, so before optimising we replace them with the
harmonic (uniform-Laplacian) membrane spanning the seen rim: flat under a flat rim, the way most
objects rest on the ground, and never outside the hull the masks allow.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from .cameras import Views, project
from .raster import rasterize
from .remesh import calc_edges
from .render import vertex_normals

MIN_VIEWS = 2
DEPTH_TOLERANCE = 0.02  # relative: a vertex within 2 % behind the visible surface still counts as seen


def seen_vertices(vertices: torch.Tensor, faces: torch.Tensor, views: Views) -> torch.Tensor:
    """(V,) bool: the vertex faces MIN_VIEWS cameras and is not hidden behind other surface in them."""
    screen = project(vertices, views)  # (N, V, 3)
    raster = rasterize(screen, faces, views.resolution)
    res = views.resolution
    col = screen[..., 0].floor().long().clamp(0, res - 1)
    row = screen[..., 1].floor().long().clamp(0, res - 1)
    surface = raster.depth.reshape(len(views), -1).gather(1, row * res + col)  # (N, V)
    unoccluded = screen[..., 2] <= surface * (1.0 + DEPTH_TOLERANCE)
    facing = (vertex_normals(vertices, faces)[None] * (views.centres[:, None] - vertices[None])).sum(-1) > 0
    # Two views, not one: where the hull is made of viewing-cone surface (e.g. the bulge over a box top
    # between the orbit's cameras), each patch grazes exactly one camera and faces away from the rest.
    return (unoccluded & facing).sum(dim=0) >= MIN_VIEWS


def fill_unseen(vertices: torch.Tensor, faces: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """Solve uniform-Laplacian(x) = 0 on unseen vertices with the seen ones fixed -> (V, 3)."""
    hidden = (~seen).nonzero().squeeze(1).cpu().numpy()  # sync
    if len(hidden) == 0 or len(hidden) == len(vertices):
        return vertices
    edges = calc_edges(faces)[0].cpu().numpy()
    n = len(vertices)
    adjacency = sp.coo_matrix((np.ones(2 * len(edges)), (np.r_[edges[:, 0], edges[:, 1]], np.r_[edges[:, 1], edges[:, 0]])),
                              shape=(n, n)).tocsr()
    laplacian = sp.diags(np.asarray(adjacency.sum(1)).ravel()) - adjacency
    known = seen.cpu().numpy()
    x = vertices.detach().cpu().double().numpy()
    lhs = laplacian[hidden][:, hidden].tocsc()
    rhs = -laplacian[hidden][:, np.flatnonzero(known)] @ x[known]
    out = x.copy()
    out[hidden] = spla.spsolve(lhs, rhs).reshape(-1, 3)
    return torch.tensor(out, dtype=vertices.dtype, device=vertices.device)

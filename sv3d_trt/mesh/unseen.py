"""Vertices no camera sees, and a minimal-surface guess for them.

An orbit near the equator never sees an object's underside, and the visual hull there bulges down
to wherever the viewing cones meet (for a box seen from 10 degrees elevation, 20 % of its height).
Neither masks nor colours can move those vertices, so before optimising we replace them with the
harmonic (uniform-Laplacian) membrane spanning the seen rim: flat under a flat rim, the way most
objects rest on the ground, and never outside the hull the masks allow. The optimiser re-spans it
over the first few remeshes, as the masks pull the rim into place (`FitConfig.refill_rounds`).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
import torch.nn.functional as F

from .cameras import Views, project
from .raster import rasterize
from .remesh import calc_edges

MIN_VIEWS = 2
DEPTH_TOLERANCE = 0.02  # relative: a vertex within 2 % behind the visible surface still counts as seen
FACING_MARGIN = 0.03  # cosine: a face counts as facing a camera from 1.7 degrees off edge-on


def seen_vertices(vertices: torch.Tensor, faces: torch.Tensor, views: Views) -> torch.Tensor:
    """(V,) bool: the vertex faces MIN_VIEWS cameras and is not hidden behind other surface in them."""
    screen = project(vertices, views)  # (N, V, 3)
    raster = rasterize(screen, faces, views.resolution)
    res = views.resolution
    col = screen[..., 0].floor().long().clamp(0, res - 1)
    row = screen[..., 1].floor().long().clamp(0, res - 1)
    # The farthest surface within one pixel: next to a contour the surface grazes the rays, so the depth
    # at the nearest pixel centre says little, and background (+inf) beside a vertex puts it on the contour.
    farthest = F.max_pool2d(raster.depth[:, None], 3, stride=1, padding=1)[:, 0]
    surface = farthest.reshape(len(views), -1).gather(1, row * res + col)  # (N, V)
    unoccluded = screen[..., 2] <= surface * (1.0 + DEPTH_TOLERANCE)
    # A vertex faces a camera when any face around it does, so contour vertices (a box's bottom edge seen
    # from above) count as seen: the masks pin them, and the membrane hangs from them. Faces within
    # FACING_MARGIN of edge-on do not count: the viewing-cone patches a visual hull is made of are
    # edge-on to the camera that carved them (a box's roof, seen only from below its top).
    v0, v1, v2 = vertices[faces].unbind(1)  # each (F, 3)
    face_n = F.normalize(torch.cross(v1 - v0, v2 - v0, dim=-1), dim=-1, eps=1e-12)
    to_camera = F.normalize(views.centres[:, None] - (v0 + v1 + v2)[None] / 3.0, dim=-1)  # (N, F, 3)
    front = (to_camera * face_n[None]).sum(-1) > FACING_MARGIN  # (N, F)
    facing = torch.zeros(len(views), len(vertices), device=vertices.device)
    facing = facing.index_add(1, faces.reshape(-1), front.float().repeat_interleave(3, dim=1)) > 0  # (N, V)
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

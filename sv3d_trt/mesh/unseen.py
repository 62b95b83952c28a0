"""Vertices no camera sees, and a guess for them.

An orbit near the equator never sees an object's underside, and the visual hull there bulges down
to wherever the viewing cones meet (for a box seen from 10 degrees elevation, 20 % of its height).
Neither masks nor colours can move those vertices, so the fit replaces them, at every remesh, with
a surface spanning the seen rim (`fill_unseen`):

- the harmonic (uniform-Laplacian) membrane where the seen surface meets it at a crease: flat
  under a flat rim, the way most objects rest on the ground (a box, the scanned bunny's base), and
  never outside the hull the masks allow;
- the biharmonic surface where the seen surface meets the membrane gently, still curving away
  from the cameras: it continues the rim's position and slope (a ball's underside closes as a cap).

Which one is read from the data: the median bend between the membrane and the seen faces along
the rim, once the fit has moved the mesh away from the carved hull (measured over fits at 256 px:
a sphere's 25-30 degrees against 47-66 for the box, composite and bunny).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.csgraph as csgraph
import scipy.sparse.linalg as spla
import torch
import torch.nn.functional as F

from .cameras import Views, project
from .raster import rasterize
from .regularize import adjacent_faces
from .remesh import calc_edges

MIN_VIEWS = 2
# Membranes whose median bend against the seen surface along their rim falls in this range are replaced by
# the biharmonic continuation: below it the membrane already continues the surface, above it the rim is a crease.
SMOOTH_RIM_DEGREES = (15.0, 40.0)
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


def fill_unseen(vertices: torch.Tensor, faces: torch.Tensor, seen: torch.Tensor,
                continue_smooth: bool = True) -> torch.Tensor:
    """Re-span the unseen vertices with the seen ones fixed -> (V, 3).

    Every connected unseen patch first gets the harmonic (uniform-Laplacian) membrane over its rim. Where
    that membrane meets the seen surface at a crease (median bend along the rim at or above the top of
    SMOOTH_RIM_DEGREES: a box's bottom edge) it stays: the flat underside an object rests on; so it does
    where it already continues the surface (below the range: a patch inside a box's top face). Where it meets
    it at a gentle bend (the seen surface was still curving away from the cameras, a ball's underside) the
    patch is re-solved as the biharmonic surface, L^2 x = 0, which continues the seen surface's position and
    slope across the rim.
    The bend is always measured on the membrane, never on a previous fill, so a fill cannot decide its own kind.
    continue_smooth=False: membranes only (the bend says little while the mesh is still the carved hull).
    """
    hidden = (~seen).cpu().numpy()  # sync
    if not hidden.any() or hidden.all():
        return vertices
    faces_np = faces.cpu().numpy()
    edges = calc_edges(faces)[0].cpu().numpy()
    n = len(vertices)
    adjacency = sp.coo_matrix((np.ones(2 * len(edges)), (np.r_[edges[:, 0], edges[:, 1]], np.r_[edges[:, 1], edges[:, 0]])),
                              shape=(n, n)).tocsr()
    laplacian = (sp.diags(np.asarray(adjacency.sum(1)).ravel()) - adjacency).tocsr()
    x = vertices.detach().cpu().double().numpy()
    out = _solve(laplacian, x, hidden)
    if not continue_smooth:
        return torch.tensor(out, dtype=vertices.dtype, device=vertices.device)
    smooth = _smooth_rim_patches(out, faces_np, adjacent_faces(faces).cpu().numpy(), adjacency, hidden)
    if smooth.any():
        out = _solve((laplacian @ laplacian).tocsr(), out, smooth)
    return torch.tensor(out, dtype=vertices.dtype, device=vertices.device)


def _solve(operator: sp.csr_matrix, x: np.ndarray, free: np.ndarray) -> np.ndarray:
    """x with its `free` rows replaced by the solution of (operator x)[free] = 0, the others fixed."""
    index, fixed = np.flatnonzero(free), np.flatnonzero(~free)
    out = x.copy()
    out[index] = spla.spsolve(operator[index][:, index].tocsc(), -operator[index][:, fixed] @ x[fixed]).reshape(-1, 3)
    return out


def _smooth_rim_patches(x, faces, pairs, adjacency, hidden) -> np.ndarray:
    """(V,) bool: the hidden vertices of patches whose membrane x meets the seen surface at a gentle bend."""
    index = np.flatnonzero(hidden)
    count, label = csgraph.connected_components(adjacency[index][:, index], directed=False)
    patch = np.full(len(x), -1)
    patch[index] = label
    normals = np.cross(x[faces[:, 1]] - x[faces[:, 0]], x[faces[:, 2]] - x[faces[:, 0]])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    face_patch = patch[faces].max(1)  # -1: a seen face (all three vertices seen)
    a, b = pairs[:, 0], pairs[:, 1]
    rim = (face_patch[a] >= 0) != (face_patch[b] >= 0)  # edges between a seen face and a patch face
    bend = np.degrees(np.arccos(np.clip((normals[a] * normals[b]).sum(1), -1.0, 1.0)))[rim]
    owner = np.maximum(face_patch[a], face_patch[b])[rim]
    smooth = np.zeros(len(x), dtype=bool)
    for p in range(count):
        if (owner == p).any() and SMOOTH_RIM_DEGREES[0] <= np.median(bend[owner == p]) < SMOOTH_RIM_DEGREES[1]:
            smooth[index[label == p]] = True
    return smooth

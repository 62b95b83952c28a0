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

Which one is read from the data, once per fit (`gentle_rims`): the median bend between the membrane
and the seen faces along the rim, after the fit has moved the mesh away from the carved hull
(measured over fits at 256 px: a sphere's 25-30 degrees against 40-66 for the box, composite and
bunny, perturbed views included).
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
SMOOTH_RIM_DEGREES = (15.0, 35.0)
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
                continued: torch.Tensor | None = None) -> torch.Tensor:
    """Re-span the unseen vertices with the seen ones fixed -> (V, 3).

    Every connected unseen patch gets the harmonic (uniform-Laplacian) membrane over its rim, or, where
    `continued` (V,) (a 0/1 vote per vertex, from `gentle_rims` and carried through remeshing) averages
    above one half over the patch, the biharmonic surface L^2 x = 0, which continues the seen surface's
    position and slope across the rim.
    """
    hidden = (~seen).cpu().numpy()  # sync
    if not hidden.any() or hidden.all():
        return vertices
    mesh = _Mesh(vertices, faces)
    out = _solve(mesh.laplacian, mesh.x, hidden)
    if continued is not None:
        _, label, index = mesh.patches(hidden)
        share = np.bincount(label, weights=continued.detach().cpu().double().numpy()[index]) / np.bincount(label)
        smooth = np.zeros(len(out), dtype=bool)
        smooth[index] = share[label] > 0.5  # each patch's mean vote
        if smooth.any():
            out = _solve((mesh.laplacian @ mesh.laplacian).tocsr(), out, smooth)
    return torch.tensor(out, dtype=vertices.dtype, device=vertices.device)


def gentle_rims(vertices: torch.Tensor, faces: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """(V,) float: 1 on the unseen vertices of patches whose membrane meets the seen surface gently, else 0.

    Gentle: the median bend between the membrane's faces and the seen faces along the patch's rim falls in
    SMOOTH_RIM_DEGREES. Above the range the rim is a crease (a box's bottom edge: the flat underside an
    object rests on stays a membrane); below it the membrane already continues the surface (a patch inside a
    box's top face). The fit asks this once, after the mesh has left the carved hull, and carries the answer
    along: asked again later, a continued fill would decide its own kind (the regularisers round the seen
    rim toward the bulge it made).
    """
    hidden = (~seen).cpu().numpy()  # sync
    vote = np.zeros(len(vertices))
    if hidden.any() and not hidden.all():
        mesh = _Mesh(vertices, faces)
        x = _solve(mesh.laplacian, mesh.x, hidden)  # measured on the membrane, whatever the fill was before
        count, label, index = mesh.patches(hidden)
        patch = np.full(len(x), -1)
        patch[index] = label
        f = mesh.faces
        normals = np.cross(x[f[:, 1]] - x[f[:, 0]], x[f[:, 2]] - x[f[:, 0]])
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        face_patch = patch[f].max(1)  # -1: a seen face (all three vertices seen)
        a, b = adjacent_faces(faces).cpu().numpy().T
        rim = (face_patch[a] >= 0) != (face_patch[b] >= 0)  # edges between a seen face and a patch face
        bend = np.degrees(np.arccos(np.clip((normals[a] * normals[b]).sum(1), -1.0, 1.0)))[rim]
        owner = np.maximum(face_patch[a], face_patch[b])[rim]
        for p in range(count):
            if (owner == p).any() and SMOOTH_RIM_DEGREES[0] <= np.median(bend[owner == p]) < SMOOTH_RIM_DEGREES[1]:
                vote[index[label == p]] = 1.0
    return torch.tensor(vote, dtype=vertices.dtype, device=vertices.device)


class _Mesh:
    """The sparse operators of a triangle mesh, in float64 numpy for scipy's solvers."""

    def __init__(self, vertices: torch.Tensor, faces: torch.Tensor):
        self.x = vertices.detach().cpu().double().numpy()
        self.faces = faces.cpu().numpy()
        edges = calc_edges(faces)[0].cpu().numpy()
        n = len(self.x)
        rows, cols = np.r_[edges[:, 0], edges[:, 1]], np.r_[edges[:, 1], edges[:, 0]]
        self.adjacency = sp.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n)).tocsr()
        self.laplacian = (sp.diags(np.asarray(self.adjacency.sum(1)).ravel()) - self.adjacency).tocsr()

    def patches(self, hidden: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
        """Connected patches of the hidden vertices: (count, label per hidden vertex, their vertex indices)."""
        index = np.flatnonzero(hidden)
        count, label = csgraph.connected_components(self.adjacency[index][:, index], directed=False)
        return count, label, index


def _solve(operator: sp.csr_matrix, x: np.ndarray, free: np.ndarray) -> np.ndarray:
    """x with its `free` rows replaced by the solution of (operator x)[free] = 0, the others fixed."""
    index, fixed = np.flatnonzero(free), np.flatnonzero(~free)
    out = x.copy()
    out[index] = spla.spsolve(operator[index][:, index].tocsc(), -operator[index][:, fixed] @ x[fixed]).reshape(-1, 3)
    return out

"""Initial shape: visual-hull carving of a voxel grid from all masks, then marching cubes.

A voxel is occupied as much as its least-covered projection: occupancy = min over views of the
bilinearly sampled soft mask (0 outside the image, since every view sees the whole object). The
0.5 iso-surface of that field is the visual hull, with sub-voxel edges thanks to the soft masks.
The kernel is Warp for the reasons given in `sv3d_trt.mesh.raster`; `carve_reference` is the same
computation with `grid_sample`.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
import warp as wp
from scipy import ndimage
from skimage import measure

from ..errors import ImageError
from .cameras import Views
from .warp_device import launch, to_warp

NEAR = 1e-3


@wp.func
def _mask_at(masks: wp.array3d(dtype=float), n: int, row: int, col: int):
    if row < 0 or col < 0 or row >= masks.shape[1] or col >= masks.shape[2]:
        return 0.0
    return masks[n, row, col]


@wp.kernel
def _carve_kernel(masks: wp.array3d(dtype=float), w2c: wp.array3d(dtype=float), intrinsics: wp.array2d(dtype=float),
                  lo: float, step: float, size: int, occupancy: wp.array(dtype=float)):
    tid = wp.tid()
    i, j, k = tid // (size * size), (tid // size) % size, tid % size
    px = lo + (float(i) + 0.5) * step
    py = lo + (float(j) + 0.5) * step
    pz = lo + (float(k) + 0.5) * step
    occ = float(1.0)
    for n in range(masks.shape[0]):
        x = w2c[n, 0, 0] * px + w2c[n, 0, 1] * py + w2c[n, 0, 2] * pz + w2c[n, 0, 3]
        y = w2c[n, 1, 0] * px + w2c[n, 1, 1] * py + w2c[n, 1, 2] * pz + w2c[n, 1, 3]
        z = w2c[n, 2, 0] * px + w2c[n, 2, 1] * py + w2c[n, 2, 2] * pz + w2c[n, 2, 3]
        if z <= NEAR:
            occ = 0.0
        else:
            # Continuous pixel index: pixel centres sit at integer + 0.5 in u, v.
            u = intrinsics[n, 0] * x / z + intrinsics[n, 2] - 0.5
            v = intrinsics[n, 1] * y / z + intrinsics[n, 3] - 0.5
            c0, r0 = int(wp.floor(u)), int(wp.floor(v))
            fu, fv = u - float(c0), v - float(r0)
            m = ((1.0 - fu) * (1.0 - fv) * _mask_at(masks, n, r0, c0) + fu * (1.0 - fv) * _mask_at(masks, n, r0, c0 + 1)
                 + (1.0 - fu) * fv * _mask_at(masks, n, r0 + 1, c0) + fu * fv * _mask_at(masks, n, r0 + 1, c0 + 1))
            occ = wp.min(occ, m)
    occupancy[tid] = occ


def voxel_centres(lo: float, step: float, size: int, device) -> torch.Tensor:
    """(size^3, 3) voxel centres, x-major (index i * size^2 + j * size + k)."""
    axis = lo + (torch.arange(size, device=device, dtype=torch.float32) + 0.5) * step
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)


def carve(masks: torch.Tensor, views: Views, lo: float, step: float, size: int) -> torch.Tensor:
    """Visual-hull occupancy (size, size, size) in [0, 1] from masks (N, H, W) at views' resolution."""
    occupancy = torch.empty(size ** 3, dtype=torch.float32, device=masks.device)
    launch(_carve_kernel, size ** 3,
           [to_warp(masks.float()), to_warp(views.w2c.float()), to_warp(views.intrinsics.float()),
            float(lo), float(step), int(size), to_warp(occupancy)], masks.device)
    return occupancy.reshape(size, size, size)


def carve_reference(masks: torch.Tensor, views: Views, lo: float, step: float, size: int) -> torch.Tensor:
    """Plain-torch visual hull: project every voxel centre and `grid_sample` the masks."""
    points = voxel_centres(lo, step, size, masks.device)  # (P, 3)
    cam = torch.einsum("nij,pj->npi", views.w2c[:, :3, :3], points) + views.w2c[:, None, :3, 3]  # (N, P, 3)
    z = cam[..., 2]
    fx, fy, cx, cy = views.intrinsics.unbind(-1)
    u = fx[:, None] * cam[..., 0] / z.clamp_min(NEAR) + cx[:, None]
    v = fy[:, None] * cam[..., 1] / z.clamp_min(NEAR) + cy[:, None]
    h, w = masks.shape[1:]
    grid = torch.stack([2.0 * u / w - 1.0, 2.0 * v / h - 1.0], dim=-1)[:, None]  # (N, 1, P, 2)
    sampled = F.grid_sample(masks[:, None].float(), grid, mode="bilinear", padding_mode="zeros",
                            align_corners=False)[:, 0, 0]  # (N, P)
    sampled = torch.where(z > NEAR, sampled, torch.zeros_like(sampled))
    return sampled.min(dim=0).values.reshape(size, size, size)


def hull_mesh(occupancy: torch.Tensor, lo: float, step: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Marching cubes of the 0.5 level of the largest occupied component -> vertices (V, 3), faces (F, 3)."""
    occ = occupancy.detach().cpu().numpy()
    labels, count = ndimage.label(occ > 0.5)
    if count == 0:
        raise ImageError("the masks carve away every voxel: the cameras do not match the frames")
    sizes = ndimage.sum(np.ones_like(occ), labels, index=np.arange(1, count + 1))
    keep = labels == (1 + int(np.argmax(sizes)))
    # Other components are pushed below the level; a zero border closes the surface at the grid edge.
    occ = np.pad(np.where(keep | (ndimage.binary_dilation(keep) & (occ <= 0.5)), occ, 0.0), 1)
    verts, faces, _, _ = measure.marching_cubes(occ, level=0.5, spacing=(step, step, step))
    verts = verts + (lo + 0.5 * step - step)  # index 0 of the padded grid is one step before voxel 0
    vertices = torch.tensor(verts, dtype=torch.float32, device=occupancy.device)
    faces_t = torch.tensor(faces.astype(np.int64), device=occupancy.device)
    v0, v1, v2 = vertices[faces_t].unbind(1)
    if torch.linalg.det(torch.stack([v0, v1, v2], dim=1)).sum() < 0:  # sync: orient faces outward
        faces_t = faces_t[:, [0, 2, 1]]
    return vertices, faces_t

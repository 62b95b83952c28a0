"""Visibility rasteriser: per-pixel nearest triangle id and depth for N views at once.

Kernel language: NVIDIA Warp. A rasteriser is a scatter: each triangle walks its own screen
bounding box and resolves depth with atomics. Warp writes that naturally (one thread per
(view, triangle), data-dependent loops, atomic_min on float and int) and compiles the same source
to native code on the CPU and to CUDA on a GPU, so CI tests exactly the GPU kernel. Triton is
block-oriented (no per-thread loops of varying length, no scalar atomics into arbitrary pixels)
and its CPU path, TRITON_INTERPRET, runs every block through numpy, far too slow for 21 views.

Like nvdiffrast's rasterize, this pass is discrete and has no gradient: `render.barycentrics`
recomputes barycentrics differentiably from the ids, and `render.antialias` gives the silhouette
gradient. Depth is resolved in two passes of one kernel (min depth, then min triangle id among
the triangles that reach that exact depth), so the result is deterministic even on shared edges.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import warp as wp

from .warp_device import launch, to_warp

NEAR = 1e-3  # triangles with a vertex closer than this to the camera plane are dropped
_NO_TRIANGLE = 2**31 - 1


class Raster(NamedTuple):
    triangle: torch.Tensor  # (N, H, W) long, -1 where no triangle covers the pixel centre
    depth: torch.Tensor  # (N, H, W) float32 camera z, +inf on background


@wp.func
def _edge(ax: float, ay: float, bx: float, by: float, px: float, py: float):
    return (bx - ax) * (py - ay) - (by - ay) * (px - ax)


@wp.kernel
def _raster_kernel(screen: wp.array3d(dtype=float), faces: wp.array2d(dtype=wp.int32), write_ids: int,
                   depth: wp.array3d(dtype=float), triangle: wp.array3d(dtype=wp.int32)):
    n, f = wp.tid()
    i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
    x0, y0, z0 = screen[n, i0, 0], screen[n, i0, 1], screen[n, i0, 2]
    x1, y1, z1 = screen[n, i1, 0], screen[n, i1, 1], screen[n, i1, 2]
    x2, y2, z2 = screen[n, i2, 0], screen[n, i2, 1], screen[n, i2, 2]
    if z0 <= NEAR or z1 <= NEAR or z2 <= NEAR:
        return
    area = _edge(x0, y0, x1, y1, x2, y2)
    if wp.abs(area) < 1.0e-12:
        return
    height, width = depth.shape[1], depth.shape[2]
    # Pixel (row, col) has its centre at (col + 0.5, row + 0.5).
    col_lo = wp.max(int(wp.floor(wp.min(x0, wp.min(x1, x2)) - 0.5)), 0)
    col_hi = wp.min(int(wp.ceil(wp.max(x0, wp.max(x1, x2)) - 0.5)), width - 1)
    row_lo = wp.max(int(wp.floor(wp.min(y0, wp.min(y1, y2)) - 0.5)), 0)
    row_hi = wp.min(int(wp.ceil(wp.max(y0, wp.max(y1, y2)) - 0.5)), height - 1)
    for row in range(row_lo, row_hi + 1):
        py = float(row) + 0.5
        for col in range(col_lo, col_hi + 1):
            px = float(col) + 0.5
            w0 = _edge(x1, y1, x2, y2, px, py) / area
            w1 = _edge(x2, y2, x0, y0, px, py) / area
            w2 = _edge(x0, y0, x1, y1, px, py) / area
            if w0 >= 0.0 and w1 >= 0.0 and w2 >= 0.0:
                # Perspective-correct depth: 1/z is affine in screen space.
                z = 1.0 / (w0 / z0 + w1 / z1 + w2 / z2)
                if write_ids == 0:
                    wp.atomic_min(depth, n, row, col, z)
                elif z == depth[n, row, col]:
                    wp.atomic_min(triangle, n, row, col, f)


def rasterize(screen: torch.Tensor, faces: torch.Tensor, resolution: int) -> Raster:
    """screen (N, V, 3) pixel u, v and depth z (see `cameras.project`); faces (F, 3) -> Raster."""
    if screen.ndim != 3 or screen.shape[-1] != 3 or faces.ndim != 2 or faces.shape[-1] != 3:
        raise ValueError(f"rasterize wants screen (N, V, 3) and faces (F, 3), got {tuple(screen.shape)}, "
                         f"{tuple(faces.shape)}")
    n = screen.shape[0]
    depth = torch.full((n, resolution, resolution), float("inf"), dtype=torch.float32, device=screen.device)
    triangle = torch.full((n, resolution, resolution), _NO_TRIANGLE, dtype=torch.int32, device=screen.device)
    if len(faces):
        screen_w = to_warp(screen.float())
        faces_w = to_warp(faces.to(torch.int32))
        depth_w, triangle_w = to_warp(depth), to_warp(triangle)
        for write_ids in (0, 1):
            launch(_raster_kernel, (n, len(faces)), [screen_w, faces_w, write_ids, depth_w, triangle_w], screen.device)
    triangle = triangle.long()
    triangle[triangle == _NO_TRIANGLE] = -1
    return Raster(triangle, depth)


def rasterize_reference(screen: torch.Tensor, faces: torch.Tensor, resolution: int) -> Raster:
    """Plain-torch rasteriser (every pixel against every triangle) with the kernel's exact rules."""
    n = screen.shape[0]
    row, col = torch.meshgrid(torch.arange(resolution, device=screen.device),
                              torch.arange(resolution, device=screen.device), indexing="ij")
    px, py = col.reshape(-1).float() + 0.5, row.reshape(-1).float() + 0.5  # (P,)
    tri = screen[:, faces.long()].float()  # (N, F, 3 vertices, 3 coords)
    x, y, z = tri[..., 0, None], tri[..., 1, None], tri[..., 2, None]  # each (N, F, 3, 1)

    def edge(a, b):  # (N, F, P)
        return (x[:, :, b] - x[:, :, a]) * (py - y[:, :, a]) - (y[:, :, b] - y[:, :, a]) * (px - x[:, :, a])

    area = ((x[:, :, 1] - x[:, :, 0]) * (y[:, :, 2] - y[:, :, 0])
            - (y[:, :, 1] - y[:, :, 0]) * (x[:, :, 2] - x[:, :, 0]))  # (N, F, 1)
    w = torch.stack([edge(1, 2), edge(2, 0), edge(0, 1)], dim=-1) / area[..., None]  # (N, F, P, 3)
    valid = (z > NEAR).all(dim=2) & (area.abs() >= 1e-12)  # (N, F, 1)
    inside = (w >= 0).all(dim=-1) & valid  # (N, F, P)
    zp = 1.0 / (w / z.squeeze(-1)[:, :, None]).sum(-1)  # (N, F, P)
    zp = torch.where(inside, zp, torch.full_like(zp, float("inf")))
    depth = zp.min(dim=1).values  # (N, P)
    hit = inside & (zp == depth[:, None])
    ids = torch.arange(len(faces), device=screen.device)[None, :, None].expand_as(hit)
    triangle = torch.where(hit, ids, torch.full_like(ids, len(faces))).min(dim=1).values
    triangle[triangle == len(faces)] = -1
    return Raster(triangle.reshape(n, resolution, resolution), depth.reshape(n, resolution, resolution))

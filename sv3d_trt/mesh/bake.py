"""Texture baking: multi-view projection with visibility and view-angle weights, then hole filling.

1. Rasterise the UV layout into the texture (the Warp rasteriser with u, v as screen position
   and constant depth): each texel gets its triangle and barycentrics, hence a 3D point and normal.
2. For every view, a texel contributes its pixel's colour if the point is the visible surface there
   (depth test against the view's depth buffer) with weight cos(theta)^4, theta the angle between
   normal and view ray: frontal views win, grazing views barely count.
3. Colours are divided by the fitted SH irradiance, so the texture holds albedo, not baked light.
4. Texels no view saw, and the gutter around charts, are filled by push-pull (a pyramid of
   weighted averages), so seams and unseen areas take their neighbours' colour.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .cameras import Views, project
from .raster import rasterize
from .render import fragments, interpolate, vertex_normals

DEPTH_TOLERANCE = 0.01  # relative depth slack for the visibility test
VIEW_POWER = 4.0
MIN_IRRADIANCE = 0.05


def fill_holes(image: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Push-pull: replace texels of weight 0 by the weighted mean of the nearest filled texels.

    image (T, T, C), weight (T, T) >= 0 -> (T, T, C). Texels with weight > 0 keep their value.
    """
    levels = []
    color, w = (image * weight[..., None]).permute(2, 0, 1)[None], weight[None, None]  # (1, C, T, T), (1, 1, T, T)
    while min(w.shape[-2:]) > 1:
        levels.append((color, w))
        color, w = F.avg_pool2d(color, 2, ceil_mode=True), F.avg_pool2d(w, 2, ceil_mode=True)
    filled = color / w.clamp_min(1e-12)
    for color, w in reversed(levels):
        up = F.interpolate(filled, size=color.shape[-2:], mode="bilinear", align_corners=False)
        own = color / w.clamp_min(1e-12)
        filled = torch.where(w > 0, own, up)
    return filled[0].permute(1, 2, 0)


def view_weights(points: torch.Tensor, normals: torch.Tensor, depth: torch.Tensor, views: Views) -> torch.Tensor:
    """(N, K) how much each view contributes to surface points (K, 3) with unit normals (K, 3): visible in the
    view's depth buffer depth (N, H, W), times cos(theta)^VIEW_POWER."""
    res = views.resolution
    weights = []
    for n in range(len(views)):
        uvz = project(points, views.subset(torch.tensor([n], device=points.device)))[0]  # (K, 3)
        col = uvz[:, 0].floor().long().clamp(0, res - 1)
        row = uvz[:, 1].floor().long().clamp(0, res - 1)
        visible = uvz[:, 2] <= depth[n, row, col] * (1.0 + DEPTH_TOLERANCE)
        cos = (normals * F.normalize(views.centres[n] - points, dim=-1)).sum(-1).clamp_min(0.0)
        weights.append(visible.float() * cos.pow(VIEW_POWER))
    return torch.stack(weights)


def bake_texture(positions: torch.Tensor, faces: torch.Tensor, uvs: torch.Tensor, images: torch.Tensor,
                 views: Views, irradiance, size: int) -> torch.Tensor:
    """Albedo texture (size, size, 3) in [0, 1], row 0 at v = 1 (image convention).

    positions (V, 3) and uvs (V, 2) per atlas vertex, faces (F, 3); images (N, H, W, 3) at
    views.resolution; irradiance maps unit normals (K, 3) to (K, 1), or None for no shading.
    """
    # 1. texels -> surface points
    screen = torch.stack([uvs[:, 0] * size, (1.0 - uvs[:, 1]) * size, torch.ones_like(uvs[:, 0])], dim=-1)[None]
    uv_raster = rasterize(screen, faces, size)
    frags = fragments(screen, faces, uv_raster)
    points = interpolate(positions, faces, frags)  # (K, 3)
    normals = F.normalize(interpolate(vertex_normals(positions, faces), faces, frags), dim=-1, eps=1e-12)
    # 2. weighted projection from every view
    res = views.resolution
    depth = rasterize(project(positions, views), faces, res).depth  # (N, H, W)
    total = torch.zeros(len(points), 3, device=points.device)
    weights = view_weights(points, normals, depth, views)  # (N, K)
    for n, w in enumerate(weights):
        uvz = project(points, views.subset(torch.tensor([n], device=points.device)))[0]  # (K, 3)
        grid = torch.stack([2.0 * uvz[:, 0] / res - 1.0, 2.0 * uvz[:, 1] / res - 1.0], dim=-1)
        color = F.grid_sample(images[n].permute(2, 0, 1)[None], grid[None, None], mode="bilinear",
                              padding_mode="border", align_corners=False)[0, :, 0].T  # (K, 3)
        total += w[:, None] * color
    weight = weights.sum(0)
    albedo = total / weight.clamp_min(1e-12)[:, None]
    # 3. remove the fitted shading
    if irradiance is not None:
        albedo = albedo / irradiance(normals).clamp_min(MIN_IRRADIANCE)
    albedo = albedo.clamp(0.0, 1.0)
    # 4. scatter into the texture, fill what no view saw and the chart gutters
    texture = torch.zeros(size * size, 3, device=points.device)
    texel_weight = torch.zeros(size * size, device=points.device)
    texture[frags.pixel] = albedo
    texel_weight[frags.pixel] = (weight > 0).float()
    return fill_holes(texture.reshape(size, size, 3), texel_weight.reshape(size, size))

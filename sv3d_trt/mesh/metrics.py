"""Mesh-to-mesh scores of mesh.md, on meshes already normalised (bbox centred, largest side 1).

- chamfer_vertex: SV3D-style, 1/2 (mean NN distance pred->gt + gt->pred) over mesh vertices (L2,
  not squared). Vertices of the ground truth are first subdivided to edges <= 0.02 so that a
  12-triangle box is not scored by its 8 corners.
- chamfer_l1, normal_consistency, fscore_1 / fscore_2: the same over 100k area-uniform surface
  samples (Occupancy Networks), F-score at tau = 1 % and 2 % of the bbox side.
- volume_iou: occupancy IoU on a 64^3 grid (SV3D), plus 128^3 ("volume_iou_128").
- seam_step: how visible the bake's view boundaries are in the texture (`seam_step`).
"""
from __future__ import annotations

import numpy as np
import torch
import trimesh
from scipy.spatial import cKDTree

from .bake import view_weights
from .cameras import Views, project
from .raster import rasterize
from .regularize import adjacent_faces
from .voxelize import voxelize

GT_MAX_EDGE = 0.02
IOU_BOUND = 0.55  # grid covers [-0.55, 0.55]^3: normalised meshes plus a margin


def chamfer_vertex(pred: trimesh.Trimesh, gt: trimesh.Trimesh) -> float:
    gt_vertices, _ = trimesh.remesh.subdivide_to_size(gt.vertices, gt.faces, max_edge=GT_MAX_EDGE)
    d_pred = cKDTree(gt_vertices).query(pred.vertices)[0]
    d_gt = cKDTree(pred.vertices).query(gt_vertices)[0]
    return float(0.5 * (d_pred.mean() + d_gt.mean()))


def surface_scores(pred: trimesh.Trimesh, gt: trimesh.Trimesh, samples: int = 100_000, seed: int = 0) -> dict:
    p, p_face = trimesh.sample.sample_surface(pred, samples, seed=seed)
    g, g_face = trimesh.sample.sample_surface(gt, samples, seed=seed + 1)
    pn, gn = pred.face_normals[p_face], gt.face_normals[g_face]
    d_p, i_p = cKDTree(g).query(p)  # pred -> gt
    d_g, i_g = cKDTree(p).query(g)
    scores = {"chamfer_l1": float(0.5 * (d_p.mean() + d_g.mean())),
              "normal_consistency": float(0.5 * (np.abs((pn * gn[i_p]).sum(1)).mean()
                                                 + np.abs((gn * pn[i_g]).sum(1)).mean()))}
    for name, tau in (("fscore_1", 0.01), ("fscore_2", 0.02)):
        precision, recall = (d_p < tau).mean(), (d_g < tau).mean()
        scores[name] = float(2 * precision * recall / max(precision + recall, 1e-12))
    return scores


def volume_iou(pred: trimesh.Trimesh, gt: trimesh.Trimesh, resolution: int = 64) -> float:
    step = 2 * IOU_BOUND / resolution

    def occupancy(mesh):
        return voxelize(torch.tensor(mesh.vertices, dtype=torch.float32), torch.tensor(mesh.faces, dtype=torch.long),
                        -IOU_BOUND, step, resolution)

    a, b = occupancy(pred), occupancy(gt)
    return float((a & b).sum()) / max(float((a | b).sum()), 1.0)


def mesh_scores(pred: trimesh.Trimesh, gt: trimesh.Trimesh, samples: int = 100_000) -> dict:
    """All geometric scores of normalised pred vs normalised gt."""
    return {"chamfer_vertex": chamfer_vertex(pred, gt), **surface_scores(pred, gt, samples),
            "volume_iou": volume_iou(pred, gt, 64), "volume_iou_128": volume_iou(pred, gt, 128)}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two image stacks in [0, 1]."""
    mse = float((a.float() - b.float()).pow(2).mean())
    return float("inf") if mse == 0 else 10.0 * float(np.log10(1.0 / mse))


def seam_step(vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray, texture: np.ndarray, views: Views,
              reference: np.ndarray) -> float:
    """How much the texture's error jumps where the bake switches views: an exposure step between views.

    e = log(baked colour / true albedo) per face (reference (F, 3): the true albedo at each face's
    centroid); an exposure or colour step between two views is a jump in e where the faces' dominant
    views (largest bake weight) differ, while e varies smoothly elsewhere whatever the texture shows.
    Returns mean |e_a - e_b| over neighbouring faces from different views less the same over neighbours
    from the same view: about 0 without seams, ~0.05 for a 5 % exposure step.

    A textured atlas mesh: vertices (V, 3) split at chart seams, faces (F, 3), uvs (V, 2), texture (T, T, 3)
    uint8; a face's colour is its texel at the centroid.
    """
    positions = torch.tensor(vertices, dtype=torch.float32)
    _, welded = torch.unique(torch.round(positions * 1e5), dim=0, return_inverse=True)  # undo the chart splits
    faces_t = torch.as_tensor(faces, dtype=torch.long)
    corners = positions[faces_t]  # (F, 3, 3)
    centroids = corners.mean(1)
    normals = torch.nn.functional.normalize(torch.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0],
                                                        dim=-1), dim=-1, eps=1e-12)
    depth = rasterize(project(positions, views), faces_t, views.resolution).depth
    weights = view_weights(centroids, normals, depth, views)  # (N, F)
    dominant = torch.where(weights.max(0).values > 0, weights.argmax(0), torch.full_like(weights[0], -1).long())
    size = texture.shape[0]
    uv = uvs[faces].mean(1)  # (F, 2)
    rows = np.clip(((1.0 - uv[:, 1]) * size).astype(int), 0, size - 1)
    cols = np.clip((uv[:, 0] * size).astype(int), 0, size - 1)
    colours = np.clip(texture[rows, cols] / 255.0, 1.0 / 255.0, None)
    error = torch.tensor(np.log(colours / np.clip(reference, 1.0 / 255.0, None)), dtype=torch.float32)
    pairs = adjacent_faces(welded[faces_t])
    a, b = pairs[:, 0], pairs[:, 1]
    seen = (dominant[a] >= 0) & (dominant[b] >= 0)
    across = seen & (dominant[a] != dominant[b])
    within = seen & (dominant[a] == dominant[b])
    jump = (error[a] - error[b]).abs().mean(-1)
    if not bool(across.any()) or not bool(within.any()):
        return 0.0
    return float(jump[across].mean() - jump[within].mean())

"""The mesh fit's objective: one function, its terms and why each is weighted as it is.

total = w_color  * mean (render - frame)^2                 photometric: albedo x SH irradiance vs the frames
      + w_mask   * mean (alpha - mask)^2                    silhouette: the antialiased coverage vs the soft masks
      + w_lap    * mean |L x / edge|^2                      smoothness: uniform Laplacian in edge-length units
      + w_normal * mean (1 - cos) over adjacent face pairs  flatness: normals of neighbouring faces agree
      + w_albedo * ALBEDO_SMOOTH_SCALE * mean |L albedo|^2  texture smoothness: neighbouring colours agree

The normal term can keep creases (`crease_degrees`: it levels off beyond that bend, so a box's
edges stay sharp while small wrinkles are smoothed). The colour term can be robust (Huber,
`huber`): squared below a colour error of `huber`, linear above, so a frame whose colours are off
(a generated view's exposure jump, flicker) pulls the surface with a bounded force instead of one
that grows with the error.

The image terms are means over every pixel of the rendered views, so they do not depend on the
working resolution or the number of views per step. The Laplacian term is scaled by the target
edge length, so it does not depend on how finely the surface is meshed. The albedo Laplacian is
not: neighbouring vertex colours differ by about a hundredth (colour gradient times edge length),
so its mean square is ~1e-4 of the image terms' scale; ALBEDO_SMOOTH_SCALE = 100 brings it back to
the image terms' order, so its weight reads on the same scale as the others.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .regularize import laplacian_energy, normal_consistency, uniform_laplacian

ALBEDO_SMOOTH_SCALE = 100.0


@dataclass(frozen=True)
class LossWeights:
    color: float = 1.0
    mask: float = 1.0
    laplacian: float = 0.02
    normal: float = 0.05
    albedo_smooth: float = 0.02


def mesh_loss(image: torch.Tensor, alpha: torch.Tensor, target_rgb: torch.Tensor, target_mask: torch.Tensor,
              vertices: torch.Tensor, faces: torch.Tensor, edges: torch.Tensor, face_pairs: torch.Tensor,
              albedo: torch.Tensor, edge_length: float, weights: LossWeights,
              huber: float | None = None, crease_degrees: float | None = None) -> tuple[torch.Tensor, dict]:
    """-> (weighted total, {term name: unweighted value}) for one step's rendered views.

    image/target_rgb (N, H, W, 3), alpha/target_mask (N, H, W); vertices/albedo (V, 3), faces (F, 3),
    edges (E, 2) and face_pairs (E, 2) of the current mesh; edge_length is the mean target edge length;
    huber: the colour error beyond which the colour term grows linearly instead of quadratically;
    crease_degrees: the bend beyond which the normal term levels off (`regularize.normal_consistency`).
    """
    residual = image - target_rgb
    terms = {
        "color": _huber(residual, huber) if huber is not None else residual.pow(2).mean(),
        "mask": (alpha - target_mask).pow(2).mean(),
        "laplacian": laplacian_energy(vertices, edges, edge_length),
        "normal": normal_consistency(vertices, faces, face_pairs, crease_degrees),
        "albedo_smooth": uniform_laplacian(albedo, edges).pow(2).sum(-1).mean() * ALBEDO_SMOOTH_SCALE,
    }
    total = sum(getattr(weights, name) * value for name, value in terms.items())
    return total, terms


def _huber(residual: torch.Tensor, delta: float) -> torch.Tensor:
    """Mean Huber penalty, equal to the squared error below delta (so its weight reads the same)."""
    magnitude = residual.abs()
    return torch.where(magnitude <= delta, residual.pow(2), 2.0 * delta * magnitude - delta ** 2).mean()

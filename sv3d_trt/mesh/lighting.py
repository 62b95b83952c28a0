"""Low-order lighting that keeps shading out of the albedo: grey irradiance from 9 SH coefficients.

colour = albedo x E(n), E(n) = sum_k c_k Y_k(n) over real spherical harmonics of order <= 2.
Ramamoorthi & Hanrahan (2001) show Lambertian irradiance under any distant lighting lies within a
few percent of this 9-term space, so one global E(n) explains smooth shading and leaves the
per-surface colour to the albedo (SV3D's appendix uses 24 spherical Gaussians for the same role).
E is grey, like the paper's scalar SG amplitudes: coloured light would trade off against albedo.
"""
from __future__ import annotations

import torch
from torch import nn

# Real SH normalisation constants for bands 0, 1, 2 (Sloan, "Stupid SH tricks", table 1).
_C0, _C1 = 0.282095, 0.488603
_C2, _C3, _C4 = 1.092548, 0.315392, 0.546274


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """Unit normals (K, 3) -> the 9 real SH basis values (K, 9)."""
    x, y, z = normals.unbind(-1)
    return torch.stack([
        torch.full_like(x, _C0),
        _C1 * y, _C1 * z, _C1 * x,
        _C2 * x * y, _C2 * y * z, _C3 * (3.0 * z * z - 1.0), _C2 * x * z, _C4 * (x * x - y * y),
    ], dim=-1)


class SphericalHarmonicsLight(nn.Module):
    """Grey irradiance E(n) >= 0, starting as the constant 1 (pure ambient)."""

    def __init__(self):
        super().__init__()
        coefficients = torch.zeros(9)
        coefficients[0] = 1.0 / _C0
        self.coefficients = nn.Parameter(coefficients)

    def forward(self, normals: torch.Tensor) -> torch.Tensor:  # (K, 3) -> (K, 1)
        return (sh_basis(normals) @ self.coefficients).clamp_min(0.0)[:, None]


class LightSolver:
    """Closed-form light: the least-squares SH coefficients for colour ~ albedo x E(n).

    Each optimisation step sees only a few views, so the normal equations are accumulated over
    steps, older ones decaying, and solved (9 x 9) after each. Gradient steps on the light lose the
    race against per-vertex albedo, which then bakes the shading in (a grey box came out with
    per-face albedos 1.6x apart); solving it outright keeps shading in the light.
    """

    def __init__(self, decay: float = 0.8, ridge: float = 1e-4):
        self.decay, self.ridge = decay, ridge
        self.gram: torch.Tensor | None = None  # (9, 9)
        self.rhs: torch.Tensor | None = None  # (9,)

    @torch.no_grad()
    def update(self, light: SphericalHarmonicsLight, albedo: torch.Tensor, normals: torch.Tensor,
               target: torch.Tensor) -> None:
        """Add K samples (albedo, unit normal, target colour; each (K, 3)) and re-solve light in place.

        With no samples yet (nothing fully covered) the light keeps its current coefficients."""
        if self.gram is None and len(albedo) == 0:
            return
        design = (albedo[:, :, None] * sh_basis(normals)[:, None, :]).reshape(-1, 9)  # (3K, 9)
        gram, rhs = design.T @ design, design.T @ target.reshape(-1)
        if self.gram is not None:
            gram, rhs = self.decay * self.gram + gram, self.decay * self.rhs + rhs
        self.gram, self.rhs = gram, rhs
        damping = self.ridge * torch.trace(gram) / 9.0 + 1e-12
        light.coefficients.copy_(torch.linalg.solve(gram + damping * torch.eye(9, device=gram.device), rhs))

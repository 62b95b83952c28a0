"""Emulated generated views: what separates a real SV3D orbit from a perfect render of the object.

Generated frames drift in exposure and colour from frame to frame, fine detail flickers, and the
silhouettes are soft, a little off, and seen from cameras that match their nominal ones only
approximately (issue 19). `perturb_views` applies, per frame, with one seeded generator:

- exposure and white balance: the object's colour times a gain exp(N(0, exposure)) and per-channel
  exp(N(0, white_balance)); the white background stays white, as in SV3D's outputs, so the
  background-referenced normalisation in `masks` cannot simply undo it;
- eroded silhouettes: coverage eroded by up to `erode` pixels (fractional: a blend toward a 3x3 min);
- blur: a Gaussian of sigma uniform in [0, blur] pixels, which also softens the silhouette;
- noise: N(0, noise) on the object's pixels;
- camera errors (`jitter_cameras`): elevation and azimuth off by up to +-`angle_deg`, radius by up to
  +-`radius`; the frames are rendered at the jittered cameras and reconstructed at the nominal ones.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import MeshError
from .cameras import orbit_cameras


@dataclass(frozen=True)
class Perturbation:
    exposure: float  # std of the log gain per frame
    white_balance: float  # std of the log gain per channel and frame
    erode: float  # silhouette erosion in pixels, at most
    blur: float  # Gaussian sigma in pixels, at most
    noise: float  # std of the pixel noise on the object
    angle_deg: float  # elevation and azimuth error, at most
    radius: float  # relative radius error, at most


PERTURB = {
    "none": None,
    "default": Perturbation(exposure=0.08, white_balance=0.04, erode=1.0, blur=1.0, noise=0.02, angle_deg=1.5,
                            radius=0.02),
    "strong": Perturbation(exposure=0.15, white_balance=0.08, erode=2.0, blur=2.0, noise=0.04, angle_deg=3.0,
                           radius=0.04),
}


def perturbation(name: str) -> Perturbation | None:
    if name not in PERTURB:
        raise MeshError(f"unknown perturbation {name!r}; expected one of {', '.join(PERTURB)}")
    return PERTURB[name]


def jitter_cameras(elevations_deg, azimuths_deg, radius: float, image_size: int, p: Perturbation,
                   generator: np.random.Generator) -> dict:
    """cameras.json content for an orbit whose every camera is off its nominal elevation, azimuth and radius."""
    frames = []
    for i, (elevation, azimuth) in enumerate(zip(elevations_deg, azimuths_deg)):
        one = orbit_cameras([elevation + generator.uniform(-p.angle_deg, p.angle_deg)],
                            [azimuth + generator.uniform(-p.angle_deg, p.angle_deg)],
                            radius=radius * (1.0 + generator.uniform(-p.radius, p.radius)), image_size=image_size)
        frames.append({**one["frames"][0], "index": i})
    return {**one, "frames": frames}


def _gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """(C, H, W) blurred by a separable Gaussian (reflect padding)."""
    if sigma < 0.1:
        return image
    half = max(1, math.ceil(3.0 * sigma))
    x = torch.arange(-half, half + 1, dtype=image.dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = image.shape[0]
    out = F.pad(image[None], (half, half, half, half), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)[0]


def perturb_views(rgba: torch.Tensor, p: Perturbation, generator: np.random.Generator) -> torch.Tensor:
    """(N, H, W, 4) straight-alpha renders -> (N, H, W, 3) perturbed frames over white, in [0, 1]."""
    out = []
    for frame in rgba:
        colour, alpha = frame[..., :3], frame[..., 3]
        gain = math.exp(generator.normal(0.0, p.exposure)) * np.exp(generator.normal(0.0, p.white_balance, 3))
        colour = (colour * torch.tensor(gain, dtype=colour.dtype)).clamp(0.0, 1.0)
        eroded = -F.max_pool2d(-alpha[None, None], 3, stride=1, padding=1)[0, 0]
        amount = generator.uniform(0.0, p.erode)
        for _ in range(int(amount)):
            alpha, eroded = eroded, -F.max_pool2d(-eroded[None, None], 3, stride=1, padding=1)[0, 0]
        alpha = torch.lerp(alpha, eroded, amount - int(amount))
        image = alpha[..., None] * colour + (1.0 - alpha[..., None])  # over white
        image = _gaussian_blur(image.permute(2, 0, 1), generator.uniform(0.0, p.blur)).permute(1, 2, 0)
        noise = torch.tensor(generator.normal(0.0, p.noise, image.shape), dtype=image.dtype)
        out.append((image + alpha[..., None] * noise).clamp(0.0, 1.0))
    return torch.stack(out)

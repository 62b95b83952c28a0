"""The 21 orbit cameras as the mesh stage sees them: read cameras.json, build orbits, project.

World frame (mesh.md "Cameras"): z up, object at the origin, camera i at
r (cosE cosA, cosE sinA, sinE), looking at the origin. Camera axes are OpenCV's::

        z_world                      image (u right, v down)
          |   cam                    +------------> u
          |  /  forward = -position  |
          | /                        |    (cx, cy) = (W/2, H/2)
          |/_______ y_world          v
         /
        x_world      right = (-sinA, cosA, 0), down = forward x right

Pixel (u, v) = (fx x/z + cx, fy y/z + cy), (0, 0) the top-left corner of the top-left pixel, so the
centre of pixel (row i, column j) is (j + 0.5, i + 0.5).

cameras.json has one layout, written and read in `sv3d_trt.cameras` (`cameras_record`,
`read_cameras`): "intrinsics" {fx, fy, cx, cy, width, height, fov_y_deg} and "frames" [{index,
elevation_deg, azimuth_deg, camera_to_world, world_to_camera}]; extra keys are ignored, so any
calibrated rig works, not just orbits.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..cameras import FOV_DEG, RADIUS, CameraSet, cameras_record, read_cameras
from ..errors import CameraError

SV3D_IMAGE_SIZE = 576


def sv3d_orbit(num_frames: int = 21, elevation_deg: float = 10.0) -> tuple[list[float], list[float]]:
    """The reference static orbit: frame i at azimuth (i+1) 360/T mod 360, the last frame at 0."""
    azimuths = [((i + 1) * 360.0 / num_frames) % 360.0 for i in range(num_frames)]
    return [float(elevation_deg)] * num_frames, azimuths


def orbit_cameras(elevations_deg, azimuths_deg, fov_deg: float = FOV_DEG, radius: float = RADIUS,
                  image_size: int = SV3D_IMAGE_SIZE) -> dict:
    """cameras.json content for an orbit (`sv3d_trt.cameras.cameras_record`)."""
    return cameras_record(elevations_deg, azimuths_deg, image_size=image_size, fov_deg=fov_deg, radius=radius)


@dataclass(frozen=True, eq=False)
class CameraRig(CameraSet):
    """N pinhole cameras at their native image size (float64 numpy), with the mesh stage's views."""

    @property
    def num_views(self) -> int:
        return len(self.w2c)

    @property
    def centres(self) -> np.ndarray:  # (N, 3)
        return np.stack([-m[:3, :3].T @ m[:3, 3] for m in self.w2c])

    def views(self, resolution: int, device="cpu") -> "Views":
        """Torch cameras for square renders of `resolution` pixels (intrinsics rescaled)."""
        if self.width != self.height:
            raise CameraError(f"square frames expected, cameras are {self.width}x{self.height}")
        scale = resolution / self.width
        intr = torch.tensor(self.intrinsics * scale, dtype=torch.float32, device=device)
        w2c = torch.tensor(self.w2c, dtype=torch.float32, device=device)
        centres = torch.tensor(self.centres, dtype=torch.float32, device=device)
        return Views(w2c, intr.expand(self.num_views, 4).contiguous(), centres, resolution)


@dataclass(frozen=True, eq=False)
class Views:
    """Cameras as torch tensors at one render resolution."""

    w2c: torch.Tensor  # (N, 4, 4)
    intrinsics: torch.Tensor  # (N, 4) fx, fy, cx, cy at `resolution`
    centres: torch.Tensor  # (N, 3) camera positions in world
    resolution: int

    def __len__(self) -> int:
        return len(self.w2c)

    def subset(self, index: torch.Tensor) -> "Views":
        return Views(self.w2c[index], self.intrinsics[index], self.centres[index], self.resolution)


def project(vertices: torch.Tensor, views: Views) -> torch.Tensor:
    """World points (V, 3) -> screen (N, V, 3): pixel u, pixel v and camera depth z. Differentiable."""
    cam = torch.einsum("nij,vj->nvi", views.w2c[:, :3, :3], vertices) + views.w2c[:, None, :3, 3]  # (N, V, 3)
    z = cam[..., 2]
    fx, fy, cx, cy = views.intrinsics.unbind(-1)  # each (N,)
    # Clamp keeps points behind the camera finite; the rasteriser drops them by depth.
    zs = z.clamp_min(1e-6)
    u = fx[:, None] * cam[..., 0] / zs + cx[:, None]
    v = fy[:, None] * cam[..., 1] / zs + cy[:, None]
    return torch.stack([u, v, z], dim=-1)


def load_cameras(source) -> CameraRig:
    """A CameraRig from a cameras.json path or its parsed dict (`sv3d_trt.cameras.read_cameras`)."""
    cams = read_cameras(source)
    return CameraRig(cams.w2c, cams.intrinsics, cams.width, cams.height)

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

cameras.json (written by `sv3d_trt.cameras.cameras_json` or `orbit_cameras` here) holds "intrinsics"
{fx, fy, cx, cy, width, height} and "frames" [{index, elevation_deg, azimuth_deg, c2w | camera_to_world,
w2c | world_to_camera}]; extra keys are ignored. Only w2c (or c2w) and the intrinsics are used, so any
calibrated rig works, not just orbits.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..cameras import look_at_origin
from ..errors import CameraError

SV3D_FOV_DEG = 33.8  # vertical field of view of the SV3D training renders
SV3D_RADIUS = 2.0
SV3D_IMAGE_SIZE = 576


def sv3d_orbit(num_frames: int = 21, elevation_deg: float = 10.0) -> tuple[list[float], list[float]]:
    """The reference static orbit: frame i at azimuth (i+1) 360/T mod 360, the last frame at 0."""
    azimuths = [((i + 1) * 360.0 / num_frames) % 360.0 for i in range(num_frames)]
    return [float(elevation_deg)] * num_frames, azimuths


def orbit_cameras(elevations_deg, azimuths_deg, fov_deg: float = SV3D_FOV_DEG, radius: float = SV3D_RADIUS,
                  image_size: int = SV3D_IMAGE_SIZE) -> dict:
    """cameras.json content for an orbit (the format agreed with `sv3d_trt.cameras`)."""
    focal = (image_size / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    frames = []
    for i, (e, a) in enumerate(zip(elevations_deg, azimuths_deg)):
        c2w = look_at_origin(float(e), float(a), radius)
        frames.append({"index": i, "elevation_deg": float(e), "azimuth_deg": float(a),
                       "c2w": c2w.tolist(), "w2c": np.linalg.inv(c2w).tolist()})
    return {"convention": "opencv camera (x right, y down, z forward), world z up", "image_size": image_size,
            "fov_deg": fov_deg, "radius": radius,
            "intrinsics": {"fx": focal, "fy": focal, "cx": image_size / 2.0, "cy": image_size / 2.0,
                           "width": image_size, "height": image_size},
            "frames": frames}


@dataclass(frozen=True, eq=False)
class CameraRig:
    """N pinhole cameras at their native image size (float64 numpy)."""

    w2c: np.ndarray  # (N, 4, 4)
    intrinsics: np.ndarray  # (4,) fx, fy, cx, cy in pixels of a width x height image
    width: int
    height: int

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


def _matrix(frame: dict, keys: tuple[str, str], index: int) -> np.ndarray:
    for key in keys:
        if key in frame:
            m = np.asarray(frame[key], dtype=np.float64)
            if m.shape != (4, 4) or not np.isfinite(m).all():
                raise CameraError(f"cameras: frame {index} {key} is not a finite 4x4 matrix")
            return m
    raise CameraError(f"cameras: frame {index} has none of {keys}")


def load_cameras(source) -> CameraRig:
    """A CameraRig from a cameras.json path or its parsed dict (extra keys are ignored)."""
    if isinstance(source, (str, Path)):
        try:
            data = json.loads(Path(source).read_text())
        except FileNotFoundError:
            raise CameraError(f"cameras file {source} not found") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CameraError(f"cameras file {source} is unreadable: {e}") from None
    else:
        data = source
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list) or not data["frames"]:
        raise CameraError("cameras: expected an object with a non-empty 'frames' list")
    intr = data.get("intrinsics")
    if not isinstance(intr, dict):
        raise CameraError("cameras: missing 'intrinsics' {fx, fy, cx, cy, width, height}")
    try:
        width = int(intr.get("width", data.get("image_size")))
        height = int(intr.get("height", data.get("image_size")))
        values = np.array([float(intr[k]) for k in ("fx", "fy", "cx", "cy")])
    except (KeyError, TypeError, ValueError) as e:
        raise CameraError(f"cameras: bad intrinsics ({e})") from None
    if not (np.isfinite(values).all() and values[0] > 0 and values[1] > 0 and width > 0 and height > 0):
        raise CameraError(f"cameras: bad intrinsics {values.tolist()} for {width}x{height}")
    w2c = []
    for i, frame in enumerate(data["frames"]):
        if not isinstance(frame, dict):
            raise CameraError(f"cameras: frame {i} is not an object")
        try:
            w2c.append(_matrix(frame, ("w2c", "world_to_camera"), i))
        except CameraError:
            w2c.append(np.linalg.inv(_matrix(frame, ("c2w", "camera_to_world"), i)))
    return CameraRig(np.stack(w2c), values, width, height)

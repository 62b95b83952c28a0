"""Per-view nuisance parameters fitted with the mesh: exposure/colour gains and small camera corrections.

Generated orbits drift in exposure and tint from frame to frame and match their nominal cameras
only to a degree or two (issue 19). Fitting the mesh to such frames as if they were exact tears
it: a brighter frame pulls albedo and shading, a frame seen from 1.5 degrees higher pulls the
silhouette. So each view gets

- a colour gain g_v = exp(l_v - mean_v l_v) per channel on the object (the white background stays
  white); the mean is removed so the gains cannot trade off against the albedo as a whole;
- a pose correction: a rotation omega_v (axis-angle, radians) of the world about the object's
  centre (the origin), and a relative change rho_v of the camera's distance. That is exactly
  the freedom an orbit camera has when its elevation, azimuth and radius are a little off. The
  mean over the views is removed too: a rotation or distance change common to every camera is
  the same as turning or scaling the mesh, which the mesh's own vertices already do (left free,
  the cameras and the mesh drifted together and the box's re-render at the nominal cameras lost
  3 dB);

all regularised toward the nominal values (0) by a quadratic penalty in units of the expected
error (PRIOR_GAIN, PRIOR_ANGLE, PRIOR_RADIUS), and optimised with Adam beside the mesh. The bake
then projects each frame through its corrected camera and divides its gain out, so the texture
shows no exposure steps between the views.
"""
from __future__ import annotations

import math

import torch

from .cameras import Views

PRIOR_GAIN = 0.1  # expected log-gain error
PRIOR_ANGLE = math.radians(2.0)  # expected pose error
PRIOR_RADIUS = 0.02  # expected relative distance error


def _rotation(omega: torch.Tensor) -> torch.Tensor:
    """Axis-angle (N, 3) -> rotation matrices (N, 3, 3): the matrix exponential of the skew matrix."""
    zero = torch.zeros_like(omega[:, 0])
    wx, wy, wz = omega.unbind(-1)
    skew = torch.stack([zero, -wz, wy, wz, zero, -wx, -wy, wx, zero], dim=-1).reshape(-1, 3, 3)
    return torch.linalg.matrix_exp(skew)


class ViewNuisance:
    """Per-view log gains (N, 3) and pose corrections (N, 4: omega, rho), Adam-optimised."""

    def __init__(self, num_views: int, device, lr_gain: float, lr_pose: float, pose: bool = True):
        self.log_gain = torch.zeros(num_views, 3, device=device, requires_grad=True)
        self.pose = torch.zeros(num_views, 4, device=device, requires_grad=pose)
        params = [{"params": [self.log_gain], "lr": lr_gain}]
        if pose:
            params.append({"params": [self.pose], "lr": lr_pose})
        self.optimizer = torch.optim.Adam(params, betas=(0.9, 0.99))

    def gains(self, index: torch.Tensor | None = None) -> torch.Tensor:
        """(n, 3) colour gains of the views `index` (all when None)."""
        g = torch.exp(self.log_gain - self.log_gain.mean(0, keepdim=True))
        return g if index is None else g[index]

    def views(self, views: Views, index: torch.Tensor | None = None) -> Views:
        """The corrected cameras of `views` (those of `index` when given): w2c' = S(rho) w2c R(omega)."""
        pose = self.pose - self.pose.mean(0, keepdim=True)  # no common part: that would turn the mesh instead
        if index is not None:
            views, pose = views.subset(index), pose[index]
        n = len(views)
        rot = torch.eye(4, device=pose.device).expand(n, 4, 4).clone()
        rot[:, :3, :3] = _rotation(pose[:, :3])
        # Moving the camera along its axis: the origin's camera depth (the z translation) scales by (1 + rho).
        one = torch.ones_like(pose[:, 3])
        depth = torch.stack([one, one, 1.0 + pose[:, 3], one], dim=-1)[..., None]  # (n, 4, 1)
        w2c = views.w2c @ rot
        w2c = torch.cat([w2c[..., :3], w2c[..., 3:] * depth], dim=-1)
        rotation, translation = w2c[:, :3, :3], w2c[:, :3, 3]
        centres = -(rotation.transpose(1, 2) @ translation[..., None])[..., 0]
        return Views(w2c, views.intrinsics, centres, views.resolution)

    def unshade(self, image: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """The inverse of `shade` on all views: frames (N, H, W, 3) as they would look at gain 1."""
        with torch.no_grad():
            gain = self.gains()[:, None, None, :]
            return (image + (1.0 / gain - 1.0) * (image - 1.0 + alpha[..., None])).clamp(0.0, 1.0)

    def shade(self, image: torch.Tensor, alpha: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Apply the gains to the object in images (n, H, W, 3) composited over white with coverage alpha."""
        gain = self.gains(index)[:, None, None, :]
        # image = alpha c + (1 - alpha): the object's part alpha c = image - (1 - alpha) takes the gain.
        return image + (gain - 1.0) * (image - 1.0 + alpha[..., None])

    def penalty(self) -> torch.Tensor:
        gain = (self.log_gain - self.log_gain.mean(0, keepdim=True)) / PRIOR_GAIN
        pose = self.pose - self.pose.mean(0, keepdim=True)
        angle, radius = pose[:, :3] / PRIOR_ANGLE, pose[:, 3] / PRIOR_RADIUS
        return gain.pow(2).sum() + angle.pow(2).sum() + radius.pow(2).sum()

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        self.optimizer.step()

    def detached_views(self, views: Views) -> Views:
        """All of `views`, corrected, without gradients (for visibility tests and the bake)."""
        with torch.no_grad():
            return detached(self.views(views))


def detached(views: Views) -> Views:
    return Views(views.w2c.detach(), views.intrinsics, views.centres.detach(), views.resolution)

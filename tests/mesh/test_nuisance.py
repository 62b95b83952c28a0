"""Per-view nuisance parameters: corrected cameras recover a jittered orbit camera, gains shade the object only."""
import numpy as np
import torch

from sv3d_trt.mesh.cameras import load_cameras, orbit_cameras
from sv3d_trt.mesh.nuisance import ViewNuisance


def test_zero_corrections_are_the_nominal_cameras_and_gains_touch_only_the_object():
    rig = load_cameras(orbit_cameras([10.0, 10.0], [30.0, 200.0], image_size=64))
    views = rig.views(64)
    nuisance = ViewNuisance(2, "cpu", 0.01, 0.01)
    corrected = nuisance.views(views)
    assert torch.allclose(corrected.w2c, views.w2c, atol=1e-6) and torch.allclose(corrected.centres, views.centres,
                                                                                    atol=1e-5)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        nuisance.log_gain.copy_(0.2 * torch.randn(2, 3, generator=g))
    colour, alpha = torch.rand(2, 8, 8, 3, generator=g), (torch.rand(2, 8, 8, generator=g) > 0.5).float()
    image = alpha[..., None] * colour + (1 - alpha[..., None])
    shaded = nuisance.shade(image, alpha, torch.tensor([0, 1]))
    gains = nuisance.gains()
    assert torch.allclose(gains.log().mean(0), torch.zeros(3), atol=1e-6)  # no overall gain: that is the albedo's
    expected = alpha[..., None] * colour * gains[:, None, None] + (1 - alpha[..., None])
    assert torch.allclose(shaded, expected, atol=1e-6)
    assert torch.allclose(nuisance.unshade(shaded, alpha), image.clamp(0, 1), atol=1e-5)


def test_pose_correction_can_express_an_elevation_azimuth_radius_error():
    nominal = load_cameras(orbit_cameras([10.0], [40.0], image_size=64)).views(64)
    actual = load_cameras(orbit_cameras([11.5], [38.8], radius=2.0 * 1.02, image_size=64)).views(64)
    nuisance = ViewNuisance(1, "cpu", 0.0, 0.003)
    points = torch.randn(200, 3, generator=torch.Generator().manual_seed(1)) * 0.3

    def project(views):
        cam = torch.einsum("nij,vj->nvi", views.w2c[:, :3, :3], points) + views.w2c[:, None, :3, 3]
        return cam[..., :2] / cam[..., 2:]

    target = project(actual)
    for _ in range(600):
        nuisance.zero_grad()
        loss = (project(nuisance.views(nominal)) - target).pow(2).sum()
        loss.backward()
        nuisance.step()
    with torch.no_grad():
        error = (project(nuisance.views(nominal)) - target).abs().max()
    assert float(error) < 2e-4 * float(target.abs().max()), float(error)
    assert np.isclose(float(nuisance.pose[0, 3]), 0.02, atol=2e-3)

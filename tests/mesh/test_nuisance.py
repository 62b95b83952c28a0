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


def test_pose_corrections_express_elevation_azimuth_radius_errors():
    # Two opposite cameras whose errors cancel on average (a common error is the mesh's to absorb): both
    # 1.5 degrees too high, azimuths 1.2 degrees apart the other way, radii 2 % out in opposite senses.
    nominal = load_cameras(orbit_cameras([10.0, 10.0], [40.0, 220.0], image_size=64)).views(64)
    actual = [load_cameras(orbit_cameras([11.5], [azimuth], radius=2.0 * scale, image_size=64)).views(64)
              for azimuth, scale in ((38.8, 1.02), (221.2, 0.98))]
    nuisance = ViewNuisance(2, "cpu", 0.0, 0.003)
    points = torch.randn(200, 3, generator=torch.Generator().manual_seed(1)) * 0.3

    def project(w2c):
        cam = torch.einsum("nij,vj->nvi", w2c[:, :3, :3], points) + w2c[:, None, :3, 3]
        return cam[..., :2] / cam[..., 2:]

    target = project(torch.cat([v.w2c for v in actual]))
    start = (project(nominal.w2c) - target).abs().max()
    for _ in range(600):
        nuisance.zero_grad()
        loss = (project(nuisance.views(nominal).w2c) - target).pow(2).sum()
        loss.backward()
        nuisance.step()
    with torch.no_grad():
        error = (project(nuisance.views(nominal).w2c) - target).abs().max()
    assert float(error) < 0.02 * float(start), (float(error), float(start))
    rho = nuisance.pose[:, 3].detach().numpy()
    assert np.allclose(rho - rho.mean(), [0.02, -0.02],
                       atol=2e-3)

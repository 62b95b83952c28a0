import math

import torch
import trimesh

from sv3d_trt.mesh.carve import carve, carve_reference, hull_mesh
from sv3d_trt.mesh.voxelize import voxelize, voxelize_reference


def test_carve_matches_reference_on_random_masks(rig, device):
    views = rig.views(40, device)
    masks = torch.rand(len(views), 40, 40, generator=torch.Generator().manual_seed(1)).to(device)
    got = carve(masks, views, -0.6, 1.2 / 24, 24)
    want = carve_reference(masks.cpu(), rig.views(40), -0.6, 1.2 / 24, 24)
    assert want.max() > 0.1 and want.std() > 0.01
    torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-4)


def test_hull_of_sphere_masks_is_a_closed_sphere(rig):
    views = rig.views(64)
    # Exact sphere silhouettes: a pixel is inside when its ray passes within 0.5 of the origin.
    rows, cols = torch.meshgrid(torch.arange(64) + 0.5, torch.arange(64) + 0.5, indexing="ij")
    fx, fy, cx, cy = views.intrinsics[0]
    rays = torch.stack([(cols - cx) / fx, (rows - cy) / fy, torch.ones_like(cols)], -1)
    rays = rays / rays.norm(dim=-1, keepdim=True)
    angle = torch.acos(rays[..., 2])
    masks = (angle < math.asin(0.5 / 2.0)).float().expand(len(views), 64, 64).contiguous()
    vertices, faces = hull_mesh(carve(masks, views, -0.65, 1.3 / 48, 48), -0.65, 1.3 / 48)
    mesh = trimesh.Trimesh(vertices.numpy(), faces.numpy())
    assert mesh.is_watertight and mesh.volume > 0
    radius = vertices.norm(dim=1)
    assert abs(float(radius.median()) - 0.5) < 0.03


def test_voxelize_matches_reference_and_volume(device):
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.4)
    sphere.vertices += torch.randn(len(sphere.vertices), 3, generator=torch.Generator().manual_seed(2)).numpy() * 0.01
    v = torch.tensor(sphere.vertices, dtype=torch.float32)
    f = torch.tensor(sphere.faces, dtype=torch.long)
    got = voxelize(v.to(device), f.to(device), -0.5, 1.0 / 24, 24).cpu()
    want = voxelize_reference(v, f, -0.5, 1.0 / 24, 24)
    assert torch.equal(got, want)
    assert abs(float(got.sum()) / 24 ** 3 - sphere.volume) < 0.03 * sphere.volume

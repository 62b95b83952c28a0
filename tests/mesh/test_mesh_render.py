import torch
import trimesh

from sv3d_trt.mesh.cameras import project
from sv3d_trt.mesh.raster import rasterize
from sv3d_trt.mesh.render import antialias, fragments, interpolate, render, to_image


def _sphere(device, dtype=torch.float32):
    m = trimesh.creation.icosphere(subdivisions=1, radius=0.5)
    return (torch.tensor(m.vertices, dtype=dtype, device=device), torch.tensor(m.faces, dtype=torch.long, device=device))


def test_barycentrics_interpolate_positions(rig, device):
    vertices, faces = _sphere(device)
    views = rig.views(48, device).subset(torch.tensor([0, 7], device=device))
    screen = project(vertices, views)
    frags = fragments(screen, faces, rasterize(screen, faces, 48))
    assert len(frags.pixel) > 100
    assert torch.all(frags.bary >= -1e-4) and torch.allclose(frags.bary.sum(-1), torch.ones_like(frags.bary[:, 0]))
    # Interpolated camera depth (perspective-correct) must equal the rasteriser's depth.
    points = interpolate(vertices, faces, frags)
    cam = project(points, views)  # (N, K, 3): depth of each fragment's point in every view
    view = frags.pixel // (48 * 48)
    depth = cam[view, torch.arange(len(view), device=device), 2]
    torch.testing.assert_close(depth, rasterize(screen, faces, 48).depth.reshape(-1)[frags.pixel], rtol=1e-4, atol=1e-4)


def _silhouette_image(vertices, faces, views, colors):
    screen = project(vertices, views)
    raster = rasterize(screen.detach(), faces, views.resolution)
    frags = fragments(screen, faces, raster)
    rgba = torch.cat([interpolate(colors, faces, frags), torch.ones_like(frags.bary[:, :1])], -1)
    bg = torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=vertices.dtype, device=vertices.device)
    image = to_image(rgba, frags, tuple(raster.triangle.shape), bg)
    return antialias(image, screen, faces, raster)


def test_antialias_gradient_matches_finite_differences(rig):
    vertices, faces = _sphere("cpu", torch.float64)
    views = rig.views(24).subset(torch.tensor([3]))
    views = type(views)(views.w2c.double(), views.intrinsics.double(), views.centres.double(), 24)
    colors = torch.rand(len(vertices), 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    weights = torch.rand(1, 24, 24, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def loss(v):
        return (_silhouette_image(v, faces, views, colors) * weights).sum()

    # Finite differences small enough never to change which triangle covers a pixel centre.
    assert torch.autograd.gradcheck(loss, (vertices.clone().requires_grad_(),), eps=1e-7, atol=1e-5, rtol=1e-3)
    v = vertices.clone().requires_grad_()
    loss(v).backward()
    assert v.grad.abs().sum() > 0  # the silhouette term moves vertices


def test_render_alpha_is_partial_only_on_the_edge(rig, device):
    vertices, faces = _sphere(device)
    out = render(vertices, faces, rig.views(32, device), colors=torch.full_like(vertices, 0.3))
    inside = out.raster.triangle >= 0
    partial = (out.alpha > 0.01) & (out.alpha < 0.99)
    assert partial.any() and inside.float().mean() > 0.2
    assert torch.all(out.image[~inside & (out.alpha == 0)] == 1.0)  # white background untouched away from edges

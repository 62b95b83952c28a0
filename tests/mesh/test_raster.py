import torch

from sv3d_trt.mesh.raster import rasterize, rasterize_reference


def _soup(n, v, f, res, seed):
    g = torch.Generator().manual_seed(seed)
    screen = torch.rand(n, v, 3, generator=g) * torch.tensor([res * 1.3, res * 1.3, 3.0]) - torch.tensor([0.15 * res, 0.15 * res, 0.2])
    faces = torch.randint(0, v, (f, 3), generator=g)
    return screen, faces


def test_matches_reference_on_random_soup(device):
    screen, faces = _soup(3, 40, 25, 37, 0)  # odd resolution, some vertices behind the near plane
    got = rasterize(screen.to(device), faces.to(device), 37)
    want = rasterize_reference(screen, faces, 37)
    covered = want.triangle >= 0
    assert 0.2 < covered.float().mean() < 0.98
    assert (got.triangle.cpu() == want.triangle).float().mean() > 0.999
    torch.testing.assert_close(got.depth.cpu()[covered], want.depth[covered], rtol=1e-5, atol=1e-5)
    assert torch.isinf(got.depth.cpu()[~covered]).all()


def test_single_triangle_exact_pixels(device):
    # Right triangle with legs of 4 px from the corner (0, 0): centres (c+.5, r+.5) with c + r + 1 <= 4.
    screen = torch.tensor([[[0.0, 0.0, 1.0], [4.0, 0.0, 1.0], [0.0, 4.0, 1.0]]], device=device)
    out = rasterize(screen, torch.tensor([[0, 1, 2]], device=device), 6)
    rows, cols = torch.meshgrid(torch.arange(6), torch.arange(6), indexing="ij")
    expected = torch.where(rows + cols + 1 <= 4, 0, -1)
    assert torch.equal(out.triangle[0].cpu(), expected)


def test_nearest_triangle_wins(device):
    quad = torch.tensor([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0], [8.0, 8.0]])
    near, far = torch.cat([quad, torch.full((4, 1), 1.0)], 1), torch.cat([quad, torch.full((4, 1), 2.0)], 1)
    screen = torch.cat([far, near])[None].to(device)
    faces = torch.tensor([[0, 1, 2], [1, 3, 2], [4, 5, 6], [5, 7, 6]], device=device)
    out = rasterize(screen, faces, 8)
    assert set(out.triangle.unique().tolist()) == {2, 3}
    torch.testing.assert_close(out.depth, torch.ones_like(out.depth))

import torch

from sv3d_trt.mesh.bake import fill_holes


def test_push_pull_keeps_known_and_fills_holes():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(37, 37, 3, generator=g)
    weight = (torch.rand(37, 37, generator=g) > 0.7).float()
    out = fill_holes(image, weight)
    known = weight > 0
    torch.testing.assert_close(out[known], image[known])
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    # A hole surrounded by one constant colour is filled with that colour.
    flat = torch.full((16, 16, 3), 0.25)
    w = torch.ones(16, 16)
    w[5:11, 5:11] = 0
    torch.testing.assert_close(fill_holes(flat, w), flat)

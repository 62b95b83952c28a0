import math

import torch
import trimesh

from sv3d_trt.mesh.regularize import adjacent_faces, normal_consistency, uniform_laplacian
from sv3d_trt.mesh.remesh import _common_neighbours, calc_edges, collapse_edges, remesh, split_edges


def _closed(vertices, faces):
    m = trimesh.Trimesh(vertices.numpy(), faces.numpy(), process=False)
    return m.is_watertight and m.is_winding_consistent and m.volume > 0


OCTAHEDRON_FACES = torch.tensor([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])


def test_split_one_long_edge_of_a_tetrahedron():
    v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0.5]])
    f = torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    assert _closed(v, f)
    colour = torch.rand(4, 3)
    v2, f2, attrs, _ = split_edges(v, f, {"c": colour}, torch.full((4,), 1.05))  # only |v1 v2| = 1.414 > 1.4
    assert v2.shape == (5, 3) and f2.shape == (6, 3)
    torch.testing.assert_close(v2[4], torch.tensor([0.5, 0.5, 0.0]))
    torch.testing.assert_close(attrs["c"][4], 0.5 * (colour[1] + colour[2]))
    assert _closed(v2, f2)


def test_collapse_one_short_edge_of_an_octahedron():
    v = torch.tensor([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]])
    v[0] = torch.tensor([0.2, 0.9, 0.0])  # +x moved next to +y: the only short edge
    assert _closed(v, OCTAHEDRON_FACES)
    v2, f2, _, _ = collapse_edges(v, OCTAHEDRON_FACES, {}, torch.full((6,), 1.0))
    assert v2.shape == (5, 3) and f2.shape == (6, 3)  # a triangular bipyramid
    assert (v2 - torch.tensor([0.1, 0.95, 0.0])).norm(dim=1).min() < 1e-6
    assert _closed(v2, f2)


def test_link_condition_counts():
    edges, _ = calc_edges(OCTAHEDRON_FACES)
    pairs = torch.tensor([[0, 2], [0, 1], [4, 5]])  # adjacent, opposite, opposite
    assert _common_neighbours(edges, pairs, 6).tolist() == [2, 4, 4]


def test_remesh_reaches_target_and_stays_manifold():
    m = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    v = torch.tensor(m.vertices, dtype=torch.float32) * torch.tensor([1.5, 1.0, 0.8])
    f = torch.tensor(m.faces)
    target = 0.06
    for _ in range(6):
        v, f, _, _ = remesh(v, f, {}, torch.full((len(v),), target))
    assert _closed(v, f)
    edges, _ = calc_edges(f)
    length = (v[edges[:, 0]] - v[edges[:, 1]]).norm(dim=1)
    assert 0.7 * target < float(length.mean()) < 1.3 * target
    # Collapses run after the splits and may stretch a few neighbours; the bulk stays in band.
    assert float(length.quantile(0.95)) < 1.6 * target and float(length.max()) < 2.5 * target


def test_regularisers_vanish_on_flat_and_regular_meshes():
    # A flat fan: centre vertex at the mean of its ring, all normals equal.
    ring = torch.stack([torch.cos(torch.arange(6) * torch.pi / 3), torch.sin(torch.arange(6) * torch.pi / 3),
                        torch.zeros(6)], 1)
    v = torch.cat([torch.zeros(1, 3), ring])
    f = torch.tensor([[0, 1 + i, 1 + (i + 1) % 6] for i in range(6)])
    edges, _ = calc_edges(f)
    assert uniform_laplacian(v, edges)[0].abs().max() < 1e-6
    m = trimesh.creation.box()
    bv, bf = torch.tensor(m.vertices, dtype=torch.float32), torch.tensor(m.faces)
    nc = normal_consistency(bv, bf, adjacent_faces(bf))
    assert 0.0 < float(nc) < 1.0  # box: 12 of 18 edge pairs are at 90 degrees, 6 coplanar -> 2/3
    torch.testing.assert_close(nc, torch.tensor(2.0 / 3.0))


def test_robust_normal_term_keeps_creases():
    """Geman-McClure on 1 - cos: the same as the plain term for a slight bend, levelled off for a box's edge."""
    def hinge(degrees):
        a = math.radians(degrees)
        vertices = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.5, 1.0, 0.0], [0.5, -math.cos(a), math.sin(a)]],
                                requires_grad=True)
        faces = torch.tensor([[0, 1, 2], [1, 0, 3]])
        return vertices, faces, torch.tensor([[0, 1]])

    vertices, faces, pairs = hinge(5.0)
    plain, robust = normal_consistency(vertices, faces, pairs), normal_consistency(vertices, faces, pairs, 30.0)
    assert abs(float(robust) / float(plain) - 1.0) < 0.03
    vertices, faces, pairs = hinge(90.0)
    plain_grad = torch.autograd.grad(normal_consistency(vertices, faces, pairs), vertices)[0].norm()
    robust_grad = torch.autograd.grad(normal_consistency(vertices, faces, pairs, 30.0), vertices)[0].norm()
    assert float(robust_grad) < float(plain_grad) / 50  # c^2 / (c + 1)^2 = 1/72 of the plain pull

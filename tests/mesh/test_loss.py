"""mesh_loss: the weighted total is the sum of its named terms, each of which reacts to what it measures."""
import dataclasses

import torch
import trimesh

from sv3d_trt.mesh.loss import LossWeights, mesh_loss
from sv3d_trt.mesh.regularize import adjacent_faces
from sv3d_trt.mesh.remesh import calc_edges


def _inputs(seed):
    g = torch.Generator().manual_seed(seed)
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    faces = torch.tensor(mesh.faces)
    vertices = torch.tensor(mesh.vertices, dtype=torch.float32) + 0.01 * torch.randn(len(mesh.vertices), 3, generator=g)
    return dict(image=torch.rand(2, 8, 8, 3, generator=g), alpha=torch.rand(2, 8, 8, generator=g),
                target_rgb=torch.rand(2, 8, 8, 3, generator=g), target_mask=torch.rand(2, 8, 8, generator=g),
                vertices=vertices.requires_grad_(), faces=faces, edges=calc_edges(faces)[0],
                face_pairs=adjacent_faces(faces), albedo=torch.rand(len(vertices), 3, generator=g).requires_grad_(),
                edge_length=0.1)


def test_total_is_the_weighted_sum_of_the_terms():
    inputs = _inputs(0)
    weights = LossWeights(color=0.7, mask=1.3, laplacian=0.11, normal=0.07, albedo_smooth=0.03)
    total, terms = mesh_loss(**inputs, weights=weights)
    assert set(terms) == {f.name for f in dataclasses.fields(LossWeights)}
    expected = sum(getattr(weights, k) * float(v.detach()) for k, v in terms.items())
    assert abs(float(total) - expected) <= 1e-6 * abs(expected)
    assert abs(float(terms["color"]) - float((inputs["image"] - inputs["target_rgb"]).pow(2).mean())) < 1e-7
    total.backward()
    assert float(inputs["vertices"].grad.abs().sum()) > 0 and float(inputs["albedo"].grad.abs().sum()) > 0


def test_each_term_measures_its_own_mismatch():
    inputs = _inputs(1)
    _, terms = mesh_loss(**inputs, weights=LossWeights())
    matched = dict(inputs, target_rgb=inputs["image"], target_mask=inputs["alpha"],
                   albedo=inputs["albedo"].detach().mean(0).expand_as(inputs["albedo"]))
    _, matched_terms = mesh_loss(**matched, weights=LossWeights())
    for name in ("color", "mask", "albedo_smooth"):
        assert float(terms[name]) > 1e-3 and float(matched_terms[name]) < 1e-10, name

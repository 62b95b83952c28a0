"""What no camera sees (seen test, membrane) and the closed-form light that keeps shading out of the texture."""
import numpy as np
import torch
import trimesh

from sv3d_trt.mesh import procedural_shape, reconstruct_mesh
from sv3d_trt.mesh.cameras import load_cameras, orbit_cameras, sv3d_orbit
from sv3d_trt.mesh.evaluate import render_ground_truth
from sv3d_trt.mesh.lighting import LightSolver, SphericalHarmonicsLight
from sv3d_trt.mesh.unseen import fill_unseen, gentle_rims, seen_vertices


def _random_normals(generator, count):
    return torch.nn.functional.normalize(torch.randn(count, 3, generator=generator), dim=-1)


def test_light_solver_recovers_the_light_across_batches():
    g = torch.Generator().manual_seed(0)
    truth = SphericalHarmonicsLight()
    truth.coefficients.data = torch.cat([torch.tensor([4.0]), 0.4 * torch.randn(8, generator=g)])
    light, solver = SphericalHarmonicsLight(), LightSolver()
    for _ in range(3):  # each batch alone would do; accumulation must not bias the answer
        normals = _random_normals(g, 500)
        albedo = 0.2 + 0.7 * torch.rand(500, 3, generator=g)
        with torch.no_grad():
            target = albedo * truth(normals)
        assert bool((truth(normals) > 0).all())  # inside the unclamped range, where least squares is exact
        solver.update(light, albedo, normals, target)
    error = (light.coefficients - truth.coefficients).detach().norm() / truth.coefficients.detach().norm()
    assert float(error) < 1e-3, float(error)


def test_light_solver_without_samples_keeps_the_light():
    light = SphericalHarmonicsLight()
    before = light.coefficients.detach().clone()
    empty = torch.zeros(0, 3)
    LightSolver().update(light, empty, empty, empty)
    assert torch.equal(light.coefficients.detach(), before)


def test_seen_vertices_of_a_sphere_stop_near_the_orbit_contour():
    # Cameras at 10 degrees elevation, radius 2, see a radius-0.5 sphere from latitude 10 - acos(0.25) = -65.5
    # up to 10 + acos(0.25) = 85.5: the cameras sit below its top.
    rig = load_cameras(orbit_cameras(*sv3d_orbit()))
    mesh = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    vertices = torch.tensor(mesh.vertices, dtype=torch.float32)
    seen = seen_vertices(vertices, torch.tensor(mesh.faces), rig.views(128))
    latitude = torch.rad2deg(torch.asin(vertices[:, 2] / 0.5))
    assert bool(seen[(latitude > -55) & (latitude < 75)].all())
    assert not bool(seen[(latitude < -75) | (latitude > 89)].any())


def test_membrane_is_flat_under_a_flat_rim():
    mesh = trimesh.creation.box(extents=(0.8, 0.6, 1.0)).subdivide().subdivide().subdivide()
    vertices = torch.tensor(mesh.vertices, dtype=torch.float32)
    faces = torch.tensor(mesh.faces)
    underside = (vertices[:, 2] < -0.49) & (vertices[:, 0].abs() < 0.39) & (vertices[:, 1].abs() < 0.29)
    assert int(underside.sum()) > 20
    bulged = vertices.clone()
    bulged[underside, 2] -= 0.1 + 0.1 * torch.rand(int(underside.sum()), generator=torch.Generator().manual_seed(1))
    assert not bool(gentle_rims(bulged, faces, ~underside).any())  # the bottom edge is a crease: no continuation
    filled = fill_unseen(bulged, faces, ~underside)
    assert float((filled[underside, 2] + 0.5).abs().max()) < 1e-5
    assert torch.equal(filled[~underside], bulged[~underside])


def test_gentle_rim_is_continued_as_a_cap():
    """A ball's unseen underside meets the membrane at a gentle bend (about 30 degrees below latitude -60):
    gentle_rims marks it, and the fill continues the sphere (biharmonic) instead of cutting it flat."""
    mesh = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    vertices = torch.tensor(mesh.vertices, dtype=torch.float32)
    faces = torch.tensor(mesh.faces)
    hidden = torch.rad2deg(torch.asin(vertices[:, 2] / 0.5)) < -60
    squashed = vertices.clone()
    squashed[hidden, 2] = -0.43 + 0.05 * torch.rand(int(hidden.sum()), generator=torch.Generator().manual_seed(0))
    continued = gentle_rims(squashed, faces, ~hidden)
    assert bool((continued[hidden] == 1).all()) and bool((continued[~hidden] == 0).all())
    cap = fill_unseen(squashed, faces, ~hidden, continued)
    assert float((cap[hidden].norm(dim=1) - 0.5).abs().max()) < 0.01  # measured 0.006
    assert float(cap[:, 2].min()) < -0.49
    membrane = fill_unseen(squashed, faces, ~hidden)
    assert float((membrane[hidden].norm(dim=1) - 0.5).abs().max()) > 0.05  # measured 0.074: flat under the rim
    assert torch.equal(cap[~hidden], squashed[~hidden]) and torch.equal(membrane[~hidden], squashed[~hidden])


def test_ground_truth_renders_flat_faces_flat():
    # Shared corner normals would shade each face of a box as a gradient no flat geometry explains.
    frames = render_ground_truth(procedural_shape("box"), orbit_cameras(*sv3d_orbit(), image_size=96), 96)
    front = frames[20]  # azimuth 0: looking straight at the +x face, a 0.6 x 1.0 rectangle
    centre = front[28:68, 38:58]
    assert float(centre.mean()) < 0.7  # the face, not the background
    assert float(centre.std()) < 2e-3, float(centre.std())


def test_texture_of_a_grey_box_carries_no_shading(tmp_path):
    """The box is one grey albedo under a directional light: its four side faces should bake alike."""
    resolution = 96
    cameras = orbit_cameras(*sv3d_orbit(), image_size=resolution)
    frames = render_ground_truth(procedural_shape("box"), cameras, resolution)
    result = reconstruct_mesh(frames.numpy(), cameras, tmp_path / "box.glb", iters=60, resolution=resolution)
    v, uv = result.vertices, result.uvs
    size = result.texture.shape[0]
    rows, cols = ((1.0 - uv[:, 1]) * (size - 1)).round().astype(int), (uv[:, 0] * (size - 1)).round().astype(int)
    texels = result.texture[rows, cols]  # each vertex's baked albedo
    middle = np.abs(v[:, 2]) < 0.3
    sides = {"+x": v[:, 0] > 0.37, "-x": v[:, 0] < -0.37, "+y": v[:, 1] > 0.27, "-y": v[:, 1] < -0.27}
    means = {name: float(texels[side & middle].mean()) for name, side in sides.items()}
    assert min(int((side & middle).sum()) for side in sides.values()) > 10
    # The frames differ by up to 1.9x between these faces (shading 0.35 ... 0.68); the texture must not.
    assert max(means.values()) / min(means.values()) < 1.1, means

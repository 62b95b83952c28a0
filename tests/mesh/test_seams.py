"""seam_step: near 0 for a texture that follows the true albedo, the size of the step for per-view exposure steps."""
import numpy as np
import torch
import trimesh

from sv3d_trt.mesh.bake import view_weights
from sv3d_trt.mesh.cameras import load_cameras, orbit_cameras, project, sv3d_orbit
from sv3d_trt.mesh.metrics import seam_step
from sv3d_trt.mesh.raster import rasterize


def test_seam_step_measures_per_view_exposure_steps():
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    count, size = len(sphere.faces), 64
    # Every face its own chart: its three corners split off, its texel at (row, col) = divmod(face, size).
    vertices = sphere.vertices[sphere.faces].reshape(-1, 3)
    faces = np.arange(3 * count).reshape(count, 3)
    rows, cols = np.divmod(np.arange(count), size)
    uvs = np.repeat(np.stack([(cols + 0.5) / size, 1.0 - (rows + 0.5) / size], -1), 3, axis=0)
    views = load_cameras(orbit_cameras(*sv3d_orbit(), image_size=96)).views(96)
    rng = np.random.default_rng(0)
    albedo = 0.25 + 0.5 * rng.random(3) * (sphere.vertices[sphere.faces].mean(1) + 0.5)  # smooth, not constant
    positions, faces_t = torch.tensor(vertices, dtype=torch.float32), torch.tensor(faces)
    corners = positions[faces_t]
    normals = torch.nn.functional.normalize(torch.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0],
                                                        dim=-1), dim=-1)
    depth = rasterize(project(positions, views), faces_t, 96).depth
    dominant = view_weights(corners.mean(1), normals, depth, views).argmax(0).numpy()
    for sigma in (0.0, 0.05, 0.1):
        gains = np.exp(rng.normal(0.0, sigma, (len(views), 3)))  # one exposure/tint per view
        texture = np.zeros((size, size, 3), np.uint8)
        texture[rows, cols] = np.round(np.clip(albedo * gains[dominant], 0, 1) * 255)
        step = seam_step(vertices, faces, uvs, texture, views, albedo)
        # 8-bit rounding alone leaves ~0.002; a log-normal step of sigma jumps by about sigma on average.
        assert abs(step - sigma) < 0.2 * sigma + 0.004, (sigma, step)

"""Evaluation harness: render a known mesh at the SV3D orbit, reconstruct it, score it.

Ground-truth frames are rendered by our rasteriser at twice the working resolution and
area-downsampled (antialiased like real renders), on white, with simple shading: albedo x
(0.35 + 0.65 max(0, n.l)) for a fixed world light l, flat across creases. Albedo is the mesh's
vertex colour (textures are sampled per vertex) or grey 0.7. Both meshes are normalised (bbox centred, largest side 1)
before scoring; `psnr` compares the textured re-render with the input views.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import trimesh
from scipy.spatial import cKDTree

from ..cameras import RADIUS
from ..devices import check_torch_device
from .cameras import load_cameras, orbit_cameras, sv3d_orbit
from .metrics import mesh_scores, psnr, seam_step
from .mesh_io import load_watertight
from .perturb import jitter_cameras, perturb_views, perturbation
from .pipeline import MeshConfig, reconstruct_mesh
from .render import render
from .shapes import normalise

LIGHT = (0.3, -0.5, 0.8)
AMBIENT, DIFFUSE, GREY = 0.35, 0.65, 0.7
CREASE_DEGREES = 30.0


def _albedo(mesh: trimesh.Trimesh) -> np.ndarray:
    """(V, 3) in [0, 1]: the vertex colours, or GREY."""
    if isinstance(mesh.visual, trimesh.visual.ColorVisuals) and mesh.visual.kind == "vertex":
        return mesh.visual.vertex_colors[:, :3] / 255.0
    return np.full((len(mesh.vertices), 3), GREY)


def render_ground_truth(mesh: trimesh.Trimesh, cameras: dict, resolution: int, alpha: bool = False) -> torch.Tensor:
    """(N, R, R, 3) float frames of a normalised mesh over white, 2x supersampled; alpha: (N, R, R, 4)
    straight colour and coverage instead.

    Vertices are split along creases sharper than CREASE_DEGREES first, so a box's faces are flat
    shaded as a real render shows them (shared corner normals would shade each face as a gradient
    that no flat geometry explains) while smooth surfaces stay smooth.
    """
    mesh = trimesh.graph.smooth_shade(mesh, angle=np.radians(CREASE_DEGREES))
    vertices = torch.tensor(mesh.vertices, dtype=torch.float32)
    faces = torch.tensor(mesh.faces, dtype=torch.long)
    colors = torch.tensor(_albedo(mesh), dtype=torch.float32)
    light = F.normalize(torch.tensor(LIGHT), dim=0)

    def shading(normals):
        return AMBIENT + DIFFUSE * (normals @ light).clamp_min(0.0)[:, None]

    with torch.no_grad():
        # Over black, the colour is premultiplied by coverage: both average linearly when downsampling.
        big = render(vertices, faces, load_cameras(cameras).views(2 * resolution), colors=colors, shading=shading,
                     background=0.0)
        both = torch.cat([big.image, big.alpha[..., None]], dim=-1).permute(0, 3, 1, 2)
        small = F.avg_pool2d(both, 2).permute(0, 2, 3, 1).contiguous()
    premultiplied, coverage = small[..., :3], small[..., 3:]
    if alpha:
        return torch.cat([premultiplied / coverage.clamp_min(1e-6), coverage], dim=-1)
    return premultiplied + (1.0 - coverage)


def evaluate(mesh, resolution: int | None = None, iters: int | None = None, elevation_deg: float = 10.0,
             config: MeshConfig | None = None, samples: int = 100_000, out_dir: str | Path | None = None,
             perturb: str = "none", seed: int = 0, device: str = "cpu") -> dict:
    """Scores of the reconstruction of `mesh` (a path or a watertight trimesh) as a JSON-ready dict.

    config: the mesh settings (a `pipeline.QUALITY` preset; default: the default preset), with resolution
    (of the rendered frames and the fit) and iters overriding its own when given.

    perturb (`perturb.PERTURB`): render the views at jittered cameras and degrade them like generated
    views (seeded by `seed`); the reconstruction gets the nominal cameras, and its re-render is scored
    (psnr) against the unperturbed ground truth.
    """
    gt = normalise(load_watertight(mesh) if isinstance(mesh, (str, Path)) else mesh)
    device = check_torch_device(str(device))  # before the ground truth is rendered
    p = perturbation(perturb)
    config = config or MeshConfig()
    resolution = resolution or config.resolution
    iters = iters or config.fit.iters
    elevations, azimuths = sv3d_orbit(elevation_deg=elevation_deg)
    cameras = orbit_cameras(elevations, azimuths, image_size=resolution)
    clean = render_ground_truth(gt, cameras, resolution)
    frames = clean
    if p is not None:
        generator = np.random.default_rng(seed)
        seen_from = jitter_cameras(elevations, azimuths, RADIUS, resolution, p, generator)
        frames = perturb_views(render_ground_truth(gt, seen_from, resolution, alpha=True), p, generator)
    config = replace(config, resolution=resolution)
    config = replace(config, fit=replace(config.fit, iters=iters), texture_size=min(config.texture_size, 4 * resolution))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sv3d_mesh_eval_") as tmp:
        out = Path(out_dir or tmp) / "reconstruction.glb"
        result = reconstruct_mesh(frames.numpy(), cameras, out, config=config, device=device)
        seconds = time.perf_counter() - start
    pred = normalise(trimesh.Trimesh(result.vertices, result.faces, process=True))
    scores = mesh_scores(pred, gt, samples)
    centroids = result.vertices[result.faces].mean(1)
    seams = seam_step(result.vertices, result.faces, result.uvs, result.texture, load_cameras(cameras).views(resolution),
                      _albedo(gt)[cKDTree(gt.vertices).query(centroids)[1]])
    return {**scores, "psnr": psnr(result.renders, clean), "seam_step": seams, "seconds": seconds,
            "stage_seconds": result.seconds, "faces": int(len(result.faces)), "resolution": resolution,
            "iters": iters, "steps": len(result.losses), "elevation_deg": elevation_deg, "perturb": perturb,
            "seed": seed, "device": str(device)}

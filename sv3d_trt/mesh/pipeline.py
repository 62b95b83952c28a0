"""21 orbit frames + cameras -> textured mesh file: the mesh stage end to end.

Stages (each its own module, timed in MeshResult.seconds):
1. masks     `masks`: load frames, foreground masks, per-frame colour normalisation
2. carve     `carve` + `unseen`: visual hull, marching cubes, membrane over what no camera saw
3. optimise  `optimize`: differentiable rendering with remeshing, albedo x SH lighting
4. uv        `uv`: decimate, xatlas in a subprocess
5. bake      `bake`: multi-view projection of the native-resolution frames into an albedo texture
6. export    `export` + `preview`: GLB or OBJ+MTL+PNG, and a contact sheet PNG beside it
"""
from __future__ import annotations

import io
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from ..devices import check_torch_device
from ..fileio import write_bytes_atomic
from .bake import bake_texture
from .cameras import CameraRig, Views, load_cameras
from .carve import carve, hull_mesh
from .export import check_format, textured_trimesh, write_mesh
from .masks import Frames, prepare_frames
from .mesh_io import MeshError
from .optimize import FitConfig, fit
from .preview import contact_sheet
from .render import render
from .unseen import fill_unseen, seen_vertices
from .uv import MAX_UV_FACES, decimate, unwrap

STAGES = ("masks", "carve", "optimise", "uv", "bake", "export")


@dataclass(frozen=True)
class MeshConfig:
    resolution: int = 256  # final working resolution of the fit (frames are resized; carving uses it too)
    grid: int = 64  # voxels per side for the visual hull (about the target edge length: fewer collapses)
    texture_size: int = 1024
    max_uv_faces: int = MAX_UV_FACES
    fit: FitConfig = field(default_factory=FitConfig)


# `--quality`: the default is MeshConfig(); draft for a quick look, high for a finer mesh and texture.
QUALITY = {
    "draft": MeshConfig(resolution=128, texture_size=512, fit=FitConfig(iters=100, coarse_resolution=96, edge_length=0.04)),
    "default": MeshConfig(),
    "high": MeshConfig(resolution=384, grid=96, texture_size=2048,
                       fit=FitConfig(iters=400, edge_length=0.02)),
}


def quality_config(name: str) -> MeshConfig:
    if name not in QUALITY:
        raise MeshError(f"unknown mesh quality {name!r}; expected one of {', '.join(QUALITY)}")
    return QUALITY[name]


@dataclass(frozen=True, eq=False)
class MeshResult:
    vertices: np.ndarray  # (V, 3) float32, world frame of the cameras
    faces: np.ndarray  # (F, 3) int64
    uvs: np.ndarray  # (V, 2) float32, v up
    texture: np.ndarray  # (T, T, 3) uint8, row 0 at the top
    files: list[Path]  # mesh file(s) then the contact sheet
    renders: torch.Tensor  # (N, R, R, 3) re-rendered textured mesh at the working resolution
    inputs: torch.Tensor  # (N, R, R, 3) the normalised input frames at the working resolution
    seconds: dict[str, float]
    losses: list[float]


def _bound(rig: CameraRig) -> float:
    """Half-side of the carving cube: what the narrowest view sees at the origin, +5 %."""
    distance = np.linalg.norm(rig.centres, axis=1).min()
    half_fov = min(rig.width / 2.0 / rig.intrinsics[0], rig.height / 2.0 / rig.intrinsics[1])
    return float(1.05 * distance * half_fov)


def reconstruct_mesh(frames_dir_or_array, cameras, out_path, iters: int | None = None,
                     resolution: int | None = None, device: str | torch.device = "cpu",
                     progress: Callable[[str, int, int], None] | None = None,
                     config: MeshConfig | None = None) -> MeshResult:
    """Reconstruct a textured mesh and write it to out_path (.glb or .obj) plus `<stem>_contact.png`.

    frames_dir_or_array: folder with frame_000.png ... or an array (T, H, W, 3|4); cameras: a
    cameras.json path or its dict; config: a `QUALITY` preset or your own (iters and resolution
    override its values). progress(stage, done, total) follows each stage after the first (reading
    and checking the inputs, so bad inputs raise before any report); the optimise stage counts its
    planned steps weighted by their cost (`schedule.step_cost`), so a rate-based ETA holds across the
    coarse-to-fine plan, and jumps to its total when the fit stops early.
    """
    check_format(out_path)
    config = config or MeshConfig()
    if resolution is not None:
        config = replace(config, resolution=resolution)
    if iters is not None:
        config = replace(config, fit=replace(config.fit, iters=iters))
    device = torch.device(check_torch_device(str(device)))  # a missing GPU: one clear error, before any work
    seconds: dict[str, float] = {}
    counts = {"optimise": config.fit.iters}  # what each stage counts to (the others: 1)
    clock = time.perf_counter()

    last_report = None

    def report(stage: str, done: int, total: int) -> None:
        nonlocal last_report
        if progress is not None and (stage, done) != last_report:  # each state once: a repeat would restart a bar
            progress(stage, done, total)
            last_report = stage, done

    def finish(stage: str, following: str | None) -> None:
        nonlocal clock
        seconds[stage] = time.perf_counter() - clock
        clock = time.perf_counter()
        if stage != "masks":  # reading the inputs is not reported: it is where bad inputs fail
            report(stage, counts.get(stage, 1), counts.get(stage, 1))
        if following is not None:
            report(following, 0, counts.get(following, 1))

    # 1. masks (reading and checking every input)
    rig = load_cameras(cameras)
    native = prepare_frames(frames_dir_or_array, rig.num_views).to(device)
    levels: dict[int, tuple[Frames, Views]] = {}

    def level(res: int) -> tuple[Frames, Views]:
        if res not in levels:
            levels[res] = native.resized(res), rig.views(res, device)
        return levels[res]

    work, views = level(config.resolution)
    finish("masks", "carve")
    # 2. carve
    bound = _bound(rig)
    step = 2.0 * bound / config.grid
    occupancy = carve(work.mask, views, -bound, step, config.grid)
    vertices, faces = hull_mesh(occupancy, -bound, step)
    vertices = fill_unseen(vertices, faces, seen_vertices(vertices, faces, views))
    scale = float((vertices.max(0).values - vertices.min(0).values).max())  # sync
    finish("carve", "optimise")
    # 3. optimise
    result = fit(vertices, faces, level, config.resolution, config.fit, scale,
                 progress=lambda fraction: report("optimise", round(fraction * config.fit.iters), config.fit.iters))
    finish("optimise", "uv")
    # 4. uv
    vertices, faces = decimate(result.vertices, result.faces, config.max_uv_faces)
    vmapping, uv_faces, uvs = unwrap(vertices.cpu().numpy(), faces.cpu().numpy(), config.texture_size)
    positions = vertices[torch.as_tensor(vmapping, device=device)]
    uv_faces_t = torch.as_tensor(uv_faces, device=device)
    uvs_t = torch.as_tensor(uvs, device=device)
    finish("uv", "bake")
    # 5. bake
    bake_views, images = rig.views(native.resolution, device), native.rgb
    if result.nuisance is not None:  # each frame through its corrected camera, its exposure divided out
        bake_views, images = result.nuisance.detached_views(bake_views), result.nuisance.unshade(images, native.mask)
    with torch.no_grad():
        texture = bake_texture(positions, uv_faces_t, uvs_t, images, bake_views, result.light, config.texture_size)
    finish("bake", "export")
    # 6. export
    texture_u8 = (texture * 255.0).round().byte().cpu().numpy()
    files = write_mesh(out_path, textured_trimesh(positions.cpu().numpy(), uv_faces, uvs, texture_u8))
    with torch.no_grad():
        renders = render(positions, uv_faces_t, views, uvs=uvs_t, texture=texture, shading=result.light).image
    sheet_path = Path(out_path).with_name(f"{Path(out_path).stem}_contact.png")
    with torch.no_grad():
        sheet = contact_sheet(work.rgb, renders)
    buffer = io.BytesIO()
    Image.fromarray(sheet).save(buffer, format="PNG")
    write_bytes_atomic(sheet_path, buffer.getvalue())
    files.append(sheet_path)
    finish("export", None)
    return MeshResult(positions.cpu().numpy(), uv_faces, uvs, texture_u8, files, renders.cpu(), work.rgb.cpu(),
                      seconds, result.losses)

"""The small output folder the viewer tests open: synthetic frames, a real cameras.json, a
textured GLB and a run.json in runtime/batch.py's layout. Fast: no generation run."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from sv3d_trt.cameras import cameras_json, static_orbit
from sv3d_trt.fileio import write_json_atomic
from sv3d_trt.outputs import save_outputs

SIZE = 96  # frame size of the fixture: small, so the folder is written in well under a second


def synthetic_frames(rng: np.random.Generator, num_frames: int = 21) -> np.ndarray:
    """(T, S, S, 3) uint8: a noisy disc on white whose colour and offset change per frame."""
    yy, xx = np.mgrid[:SIZE, :SIZE] / SIZE
    frames = np.full((num_frames, SIZE, SIZE, 3), 255, np.uint8)
    for i in range(num_frames):
        cx = 0.5 + 0.15 * np.cos(2 * np.pi * i / num_frames)
        disc = (xx - cx) ** 2 + (yy - 0.5) ** 2 < 0.3 ** 2
        colour = rng.integers(30, 220, 3)
        frames[i][disc] = np.clip(colour + rng.integers(-20, 20, (int(disc.sum()), 3)), 0, 255)
    return frames


def textured_sphere(rng: np.random.Generator):
    """A UV sphere (radius 0.4) with a random 64x64 texture: trimesh.Trimesh with TextureVisuals."""
    import trimesh

    from sv3d_trt.mesh.export import textured_trimesh

    sphere = trimesh.creation.uv_sphere(radius=0.4, count=[24, 24])
    direction = sphere.vertices / np.linalg.norm(sphere.vertices, axis=1, keepdims=True)  # (V, 3)
    uvs = np.stack([0.5 + np.arctan2(direction[:, 1], direction[:, 0]) / (2 * np.pi),
                    0.5 + np.arcsin(np.clip(direction[:, 2], -1, 1)) / np.pi], axis=1).astype(np.float32)
    texture = np.kron(rng.integers(40, 255, (8, 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)  # (64, 64, 3) blocks
    return textured_trimesh(sphere.vertices.astype(np.float32), sphere.faces, uvs, texture)


def run_info() -> dict:
    """run.json as runtime/batch.py writes it."""
    from sv3d_trt.runtime.batch import versions

    return {"image": "/data/mug.png", "settings": {"seed": 7, "steps": 2, "orbit": None, "elevation": None,
                                                   "decode_chunk": 14, "mesh": True, "fps": 10},
            "variant": "sv3d_p", "backend": {"backend": "torch-eager", "device": "cpu", "dtype": "float32",
                                             "autocast": False, "torch": "2.14.1"},
            "noise_source": "torch", "fp32_fallback": None, "versions": versions(),
            "timings_s": {"encode": 0.41, "denoise": 3.2, "decode": 0.9, "save": 0.2, "mesh": 5.5}}


def make_output_dir(out: Path, rng: np.random.Generator) -> Path:
    """A complete `sv3d-trt run --mesh` folder: frames, cameras.json, input.png, mesh.glb, run.json, index.html."""
    from sv3d_trt.mesh.export import write_mesh
    from sv3d_trt.viewer import write_page

    frames = synthetic_frames(rng)
    save_outputs(out, frames, cameras_json(static_orbit(21, 10.0), image_size=SIZE), input_rgb=frames[-1])
    write_mesh(out / "mesh.glb", textured_sphere(rng))
    write_json_atomic(out / "run.json", run_info())
    write_page(out)
    return out

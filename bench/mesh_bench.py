"""Seconds per mesh stage (masks, carve, optimise, uv, bake, export) on CPU, and on CUDA when present.

    python bench/mesh_bench.py [--shape textured_sphere] [--frame-size 576] [--resolution 128] [--iters 60]
                               [--json out.json]

Frames are our own ground-truth renders of a procedural shape at the SV3D orbit (elevation 10),
so the numbers need no model. The issue's GPU target is <= 30 s end to end at 576 px, 21 views.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from sv3d_trt.fileio import write_json_atomic
from sv3d_trt.mesh import MeshConfig, procedural_shape, reconstruct_mesh
from sv3d_trt.mesh.cameras import orbit_cameras, sv3d_orbit
from sv3d_trt.mesh.evaluate import render_ground_truth


def run(shape: str, frame_size: int, resolution: int, iters: int, device: str) -> dict:
    cameras = orbit_cameras(*sv3d_orbit(), image_size=frame_size)
    frames = render_ground_truth(procedural_shape(shape), cameras, frame_size).numpy()
    config = MeshConfig(resolution=resolution, texture_size=min(1024, 4 * frame_size))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = reconstruct_mesh(frames, cameras, Path(tmp) / "mesh.glb", iters=iters, device=device, config=config)
        total = time.perf_counter() - start
    return {"device": device, "shape": shape, "frames": f"21x{frame_size}", "resolution": resolution, "iters": iters, "faces": int(len(result.faces)),
            "total_s": round(total, 2), **{f"{k}_s": round(v, 2) for k, v in result.seconds.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="textured_sphere")
    parser.add_argument("--frame-size", type=int, default=576, help="size of the 21 input frames")
    parser.add_argument("--resolution", type=int, default=128, help="working resolution of carving and fitting")
    parser.add_argument("--iters", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", dest="json_out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = [run(args.shape, args.frame_size, args.resolution, args.iters, d) for d in devices]
    keys = list(rows[0])
    print(" | ".join(keys))
    for row in rows:
        print(" | ".join(str(row[k]) for k in keys))
    if args.json_out:
        write_json_atomic(args.json_out, rows)


if __name__ == "__main__":
    main()

"""Seconds per mesh stage (masks, carve, optimise, uv, bake, export) on CPU, and on CUDA when present.

    python bench/mesh_bench.py [--shape textured_sphere] [--frame-size 576] [--quality default]
                               [--resolution R] [--iters N] [--threads 2] [--json out.json]

Frames are our own ground-truth renders of a procedural shape at the SV3D orbit (elevation 10),
so the numbers need no model; this is what `sv3d-trt mesh FRAMES --quality Q` runs on 576 px
frames. The issue's targets: the default within 60 s on a quiet 2-core CPU, within 20 s on an
H100/H200. Each row carries the 1-minute load average before and after it: other jobs on the same
cores slow every stage, so a row measured under load is not a quiet-machine number.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from sv3d_trt.fileio import write_json_atomic
from sv3d_trt.mesh import procedural_shape, quality_config, reconstruct_mesh
from sv3d_trt.mesh.cameras import orbit_cameras, sv3d_orbit
from sv3d_trt.mesh.evaluate import render_ground_truth


def run(shape: str, frame_size: int, quality: str, resolution: int | None, iters: int | None, device: str) -> dict:
    cameras = orbit_cameras(*sv3d_orbit(), image_size=frame_size)
    frames = render_ground_truth(procedural_shape(shape), cameras, frame_size).numpy()
    config = quality_config(quality)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = reconstruct_mesh(frames, cameras, Path(tmp) / "mesh.glb", iters=iters, resolution=resolution,
                                  device=device, config=config)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        total = time.perf_counter() - start
    return {"device": device, "shape": shape, "frames": f"21x{frame_size}", "quality": quality,
            "resolution": resolution or config.resolution, "iters": iters or config.fit.iters,
            "steps": len(result.losses), "faces": int(len(result.faces)), "total_s": round(total, 2),
            **{f"{k}_s": round(v, 2) for k, v in result.seconds.items()},
            "load_avg": f"{load_before:.1f}->{os.getloadavg()[0]:.1f}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="textured_sphere")
    parser.add_argument("--frame-size", type=int, default=576, help="size of the 21 input frames")
    parser.add_argument("--quality", default="default", help="draft, default or high (sv3d-trt mesh --quality)")
    parser.add_argument("--resolution", type=int, default=None, help="final working resolution (default: the preset's)")
    parser.add_argument("--iters", type=int, default=None, help="planned steps (default: the preset's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", dest="json_out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = [run(args.shape, args.frame_size, args.quality, args.resolution, args.iters, d) for d in devices]
    keys = list(rows[0])
    print(" | ".join(keys))
    for row in rows:
        print(" | ".join(str(row[k]) for k in keys))
    if args.json_out:
        write_json_atomic(args.json_out, rows)


if __name__ == "__main__":
    main()

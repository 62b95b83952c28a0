"""Make docs/viewer.png: the viewer page of an output folder with an orbit and its mesh.

The orbit is rendered, not generated (no weights here): a procedural, coloured composite shape
(mesh/shapes.py) at the 21 SV3D cameras, written with save_outputs like `generate`, then
`reconstruct_mesh` writes mesh.glb as `sv3d-trt mesh` does. Needs the mesh extra, playwright
and Debian's chromium.  python docs/viewer_screenshot.py [OUT_DIR]
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import trimesh

from sv3d_trt.cameras import cameras_json, static_orbit
from sv3d_trt.mesh import procedural_shape, reconstruct_mesh
from sv3d_trt.mesh.evaluate import render_ground_truth
from sv3d_trt.outputs import save_outputs
from sv3d_trt.viewer import save_page

RESOLUTION = 256
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader",
                 "--enable-unsafe-swiftshader", "--no-first-run", "--disable-background-networking"]


def coloured_composite() -> trimesh.Trimesh:
    mesh = procedural_shape("composite")
    x, y, z = mesh.vertices.T
    rgb = np.stack([0.55 + 0.35 * np.tanh(4 * x), 0.35 + 0.25 * np.cos(6 * z), 0.6 - 0.35 * np.tanh(4 * x)], -1)
    mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=(np.clip(rgb, 0, 1) * 255).astype(np.uint8))
    return mesh


def main(out: Path) -> None:
    cameras = cameras_json(static_orbit(21, 10.0), image_size=RESOLUTION)
    frames = render_ground_truth(coloured_composite(), cameras, RESOLUTION)  # (21, R, R, 3) in [0, 1]
    frames = (frames.clamp(0, 1) * 255).round().byte().numpy()
    save_outputs(out, frames, cameras, input_rgb=frames[-1])
    reconstruct_mesh(out, out / "cameras.json", out / "mesh.glb", resolution=128)
    page = save_page(out)

    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        tab = browser.new_page(viewport={"width": 1320, "height": 900})
        tab.goto(page.resolve().as_uri())
        tab.wait_for_function("window.sv3dViewer && sv3dViewer.meshLoaded", timeout=60_000)
        tab.locator("#scrubber").fill("4")
        tab.wait_for_timeout(500)
        tab.screenshot(path=str(Path(__file__).with_name("viewer.png")), full_page=True)
        browser.close()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "viewer_demo"))

"""`sv3d-trt mesh DIR --out DIR/mesh.glb` refreshes DIR/index.html, which then carries the mesh."""
from __future__ import annotations

import base64
import re

import numpy as np
from click.testing import CliRunner

from sv3d_trt.cameras import cameras_json, static_orbit
from sv3d_trt.cli import main
from sv3d_trt.mesh import procedural_shape
from sv3d_trt.mesh.evaluate import render_ground_truth
from sv3d_trt.outputs import save_outputs


def test_mesh_command_rewrites_the_folder_page(tmp_path):
    cameras = cameras_json(static_orbit(21, 10.0), image_size=64)
    frames = render_ground_truth(procedural_shape("textured_sphere"), cameras, 64)  # (21, 64, 64, 3) in [0, 1]
    folder = tmp_path / "orbit"
    save_outputs(folder, (frames.numpy() * 255).round().astype(np.uint8), cameras)
    assert 'id="mesh-canvas"' not in (folder / "index.html").read_text()
    result = CliRunner().invoke(main, ["mesh", str(folder), "--out", str(folder / "mesh.glb"), "--iters", "8",
                                       "--resolution", "64"])
    assert result.exit_code == 0, result.output
    assert f"viewer: {folder / 'index.html'}" in result.output
    page = (folder / "index.html").read_text()
    inlined = re.search(r'<script [^>]*id="sv3d-mesh">(.*?)</script>', page, re.S).group(1)
    assert base64.b64decode(inlined) == (folder / "mesh.glb").read_bytes()
    assert '"file":"frame_020.png"' in page  # the orbit is still there

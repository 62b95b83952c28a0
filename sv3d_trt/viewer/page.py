"""index.html for an output folder: the orbit with its cameras, the mesh, the run facts.

The page is rendered from what the folder holds when it is written (cameras.json and its
frame files, input.png, run.json, a GLB mesh), so each writer that adds one of those calls
`write_page` again. It must open from file:// with no server: Chromium forbids fetch() and
ES-module imports there, and a WebGL texture from a file:// <img> is cross-origin. So the
frames are plain <img src> beside the page (no copy), while cameras, run facts and the GLB
(base64, texture inside) are inlined, and three.js comes as one inlined classic script.
"""
from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from urllib.parse import quote

from ..errors import ViewerError
from ..fileio import write_bytes_atomic
from .html import GENERATOR, asset, bar_chart, definitions, document, esc, inline_script, json_script

log = logging.getLogger(__name__)

PAGE_NAME = "index.html"
MESH_NAME = "mesh.glb"  # what `run --mesh` writes; other GLBs in the folder are used when it is absent


INTRINSICS = ("width", "height", "fx", "fy", "cx", "cy")  # what the frustums are drawn from


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ViewerError(f"cannot read {path}: {e}") from None
    if not isinstance(obj, dict):
        raise ViewerError(f"{path} does not hold a JSON object")
    return obj


def _cameras(path: Path) -> tuple[list[dict], dict | None, str]:
    """Per frame of cameras.json (sv3d_trt.cameras.cameras_json): its image file, elevation,
    azimuth and camera-to-world pose; the intrinsics; the note when the orbit is assumed
    (sv3d_u). ([], None, "") without the file."""
    if not path.is_file():
        return [], None, ""
    cameras = _read_json(path)
    frames = []
    try:
        for i, entry in enumerate(cameras.get("frames", [])):
            pose = [[float(v) for v in row] for row in entry["camera_to_world"]]
            if len(pose) < 3 or any(len(row) != 4 for row in pose):
                raise ValueError(f"frame {i}: camera_to_world is not 4x4")
            frames.append({"file": quote(str(entry.get("file") or f"frame_{i:03d}.png")),
                           "elevation_deg": float(entry["elevation_deg"]),
                           "azimuth_deg": float(entry["azimuth_deg"]), "camera_to_world": pose})
        intrinsics = {k: float(cameras["intrinsics"][k]) for k in INTRINSICS} if frames else None
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise ViewerError(f"{path} is malformed ({type(e).__name__}: {e}); expected the layout "
                          "sv3d-trt writes (frames with elevation_deg, azimuth_deg, camera_to_world; intrinsics)") from None
    return frames, intrinsics, str(cameras.get("note", "")) if cameras.get("orbit_assumed") else ""


def find_mesh(folder: Path) -> Path | None:
    """mesh.glb, else the newest *.glb in the folder, else None."""
    if (folder / MESH_NAME).is_file():
        return folder / MESH_NAME
    glbs = sorted(folder.glob("*.glb"), key=lambda p: p.stat().st_mtime, reverse=True)
    return glbs[0] if glbs else None


def _mapping(value) -> dict:
    """A run.json field that should be an object, or {} (the page shows what it can)."""
    return value if isinstance(value, dict) else {}


def _run_facts(run: dict) -> dict:
    """The headline facts of run.json (written by `sv3d-trt run`, runtime/batch.py)."""
    backend, settings = _mapping(run.get("backend")), _mapping(run.get("settings"))
    versions = {**_mapping(run.get("versions")),
                **{k: backend[k] for k in ("torch", "onnxruntime", "tensorrt") if k in backend}}
    return {
        "backend": backend.get("backend"),
        "precision": backend.get("precision") or backend.get("dtype"),
        "device": backend.get("gpu") or backend.get("device") or ", ".join(backend.get("providers", [])),
        "variant": run.get("variant"),
        "seed": settings.get("seed"),
        "steps": settings.get("steps"),
        "noise": run.get("noise_source"),
        "fp32 fallback": run.get("fp32_fallback"),
        "image": run.get("image"),
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items()),
    }


def _facts_section(run: dict | None) -> str:
    if run is None:
        return ('<section id="facts"><h2>Run</h2><p class="dim">No run.json here: '
                "<code>sv3d-trt run</code> records backend, precision, device, seed, versions and "
                "per-stage timings.</p></section>")
    timings = {k: float(v) for k, v in _mapping(run.get("timings_s")).items() if isinstance(v, (int, float))}
    bars = bar_chart([(k, v, "series-0") for k, v in timings.items()], lambda v: f"{v:.3g} s") if timings else ""
    backend = _mapping(run.get("backend"))
    details = definitions({k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in backend.items()})
    return (f'<section id="facts"><h2>Run</h2>{definitions(_run_facts(run))}'
            f'<h3>Per-stage timings</h3><div id="timings">{bars}</div>'
            f"<details><summary>backend settings</summary>{details}</details></section>")


def _orbit_section(frames: list[dict], has_input: bool) -> str:
    if not frames:
        return ""
    first = frames[0]["file"]
    input_view = (f'<figure><img id="input-image" src="input.png" alt="input view"><figcaption>input view'
                  "</figcaption></figure>" if has_input else "")
    return (f'<section id="orbit"><h2>Orbit</h2><div class="views">{input_view}'
            f'<figure><img id="frame-image" src="{esc(first)}" alt="orbit frame">'
            f'<figcaption id="frame-label"></figcaption></figure>'
            '<figure class="canvas"><canvas id="cameras-canvas" width="480" height="480"></canvas>'
            f'<figcaption id="camera-count">{len(frames)} cameras</figcaption></figure></div>'
            '<div class="controls"><button id="play" type="button">play</button>'
            f'<input id="scrubber" type="range" min="0" max="{len(frames) - 1}" value="0" step="1" '
            'aria-label="frame"></div></section>')


def _mesh_section(mesh: Path | None) -> str:
    if mesh is None:
        return ""
    size = mesh.stat().st_size
    return (f'<section id="mesh"><h2>Mesh <span class="dim">{esc(mesh.name)}, {size / 2**20:.2f} MiB</span></h2>'
            '<figure class="canvas"><canvas id="mesh-canvas" width="640" height="480"></canvas></figure>'
            '<div class="controls"><label><input id="wireframe" type="checkbox"> wireframe</label></div></section>')


def render_page(result_dir) -> str:
    """The viewer page for an output folder, as one HTML string (what index.html holds; the
    server serves the same string per job, with the folder's files beside it)."""
    folder = Path(result_dir)
    if not folder.is_dir():
        raise ViewerError(f"{folder} is not a folder")
    frames, intrinsics, note = _cameras(folder / "cameras.json")
    mesh = find_mesh(folder)
    if not frames and mesh is None:
        raise ViewerError(f"{folder} holds neither cameras.json with frames nor a .glb mesh: nothing to show")
    run = _read_json(folder / "run.json") if (folder / "run.json").is_file() else None
    data = {"frames": frames, "intrinsics": intrinsics, "input_view_index": len(frames) - 1,
            "has_mesh": mesh is not None}  # the input view is the last frame (sv3d_trt.cameras)
    # The folder's name is set by the script from the page's URL: the folder may be a staging
    # directory now and renamed into place later (runtime/batch.py).
    image = Path(str(run["image"])).name if run and run.get("image") else ""
    subtitle = " · ".join(t for t in (image, note) if t)
    body = (f'<header><h1 id="title">sv3d-trt</h1><p class="dim">{esc(subtitle)}</p></header>'
            + _orbit_section(frames, (folder / "input.png").is_file())
            + f'<div class="row">{_mesh_section(mesh)}{_facts_section(run)}</div>')
    scripts = json_script("sv3d-data", data)
    if mesh is not None:
        scripts += (f'<script type="application/octet-stream" id="sv3d-mesh">'
                    f"{base64.b64encode(mesh.read_bytes()).decode()}</script>")
    scripts += inline_script(asset("three.bundle.min.js")) + inline_script(asset("viewer.js"))
    return document("sv3d-trt", body, scripts)


def _ours(page: Path) -> bool:
    """Whether an existing index.html was written by this package (so may be replaced)."""
    try:
        with open(page, encoding="utf-8", errors="replace") as f:
            return f'content="{GENERATOR}"' in f.read(4096)
    except OSError:
        return False


def save_page(result_dir) -> Path:
    """(Re)write result_dir/index.html and return its path; ViewerError when the folder has
    nothing to show or holds an index.html this package did not write (never replaced)."""
    page = Path(result_dir) / PAGE_NAME
    if page.exists() and not _ours(page):
        raise ViewerError(f"{page} was not written by sv3d-trt; not replacing it")
    write_bytes_atomic(page, render_page(result_dir).encode("utf-8"))
    return page


def write_page(result_dir) -> Path | None:
    """save_page for the writers of output folders (generate, run, mesh, the server): the page is
    a view of the results, so a folder it cannot show is logged and None returned, never a
    failure of the run that wrote the results."""
    try:
        return save_page(result_dir)
    except ViewerError as e:
        log.warning("no viewer page: %s", e)
        return None

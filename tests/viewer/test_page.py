"""The page as HTML text, without a browser: what it inlines and references, its errors, and
which writers (re)write it."""
from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

from sv3d_trt.cameras import cameras_json, static_orbit
from sv3d_trt.cli import main
from sv3d_trt.errors import ViewerError
from sv3d_trt.outputs import save_outputs
from sv3d_trt.viewer import render_page, save_page, write_page
from sv3d_trt.viewer.html import inline_script, json_script

from viewer_folder import SIZE, synthetic_frames


def _inline(page: str, element_id: str) -> str:
    return re.search(f'<script [^>]*id="{element_id}">(.*?)</script>', page, re.S).group(1)


def test_page_inlines_cameras_mesh_and_facts(output_dir):
    page = (output_dir / "index.html").read_text()
    assert page == render_page(output_dir)
    data = json.loads(_inline(page, "sv3d-data"))
    cameras = json.loads((output_dir / "cameras.json").read_text())
    assert [f["file"] for f in data["frames"]] == [f"frame_{i:03d}.png" for i in range(21)]
    assert [f["azimuth_deg"] for f in data["frames"]] == [f["azimuth_deg"] for f in cameras["frames"]]
    assert data["intrinsics"] == {k: cameras["intrinsics"][k] for k in ("width", "height", "fx", "fy", "cx", "cy")}
    assert data["input_view_index"] == 20
    # The GLB travels inside the page byte for byte (no fetch from file://).
    assert base64.b64decode(_inline(page, "sv3d-mesh")) == (output_dir / "mesh.glb").read_bytes()
    assert '<img id="input-image" src="input.png"' in page
    for fact in ("torch-eager", "float32", "sv3d_p", "torch 2.14.1", "mug.png"):
        assert fact in page
    assert page.count('<rect class="series-0"') == 5  # one bar per stage of timings_s
    assert "<script src=" not in page and "<link " not in page  # scripts and styles are inline


def test_text_is_escaped_and_inline_data_cannot_end_its_script(tmp_path):
    frames = synthetic_frames(np.random.default_rng())
    cameras = cameras_json(None, image_size=SIZE)  # sv3d_u: the orbit is assumed, the page shows the note
    cameras["note"] = "</script><script>alert(1)</script>"
    save_outputs(tmp_path / "o", frames, cameras)
    page = (tmp_path / "o" / "index.html").read_text()
    assert "<script>alert(1)" not in page and "&lt;/script&gt;&lt;script&gt;alert(1)" in page
    assert json.loads(_inline(page, "sv3d-data"))["frames"][3]["file"] == "frame_003.png"
    assert "</script><b>" not in json_script("x", {"text": "</script><b>"})
    assert "</script" not in inline_script("var s = '</script>';")[8:-9]


def test_save_outputs_writes_the_page(tmp_path):
    frames = synthetic_frames(np.random.default_rng())
    paths = save_outputs(tmp_path / "o", frames, cameras_json(static_orbit(21, 5.0), image_size=SIZE))
    page = paths["page"].read_text()
    assert paths["page"] == tmp_path / "o" / "index.html"
    assert 'id="mesh-canvas"' not in page and "No run.json here" in page
    assert 'id="input-image"' not in page  # no input.png was given


def test_nothing_to_show_is_a_viewer_error(tmp_path):
    with pytest.raises(ViewerError, match="nothing to show"):
        render_page(tmp_path)
    (tmp_path / "cameras.json").write_text("{not json")
    with pytest.raises(ViewerError, match="cameras.json"):
        render_page(tmp_path)
    for bad in ([1, 2], {"frames": [{"file": "a.png"}]}, {"frames": {"a": 1}},
                {"frames": [{"elevation_deg": 0, "azimuth_deg": 0, "camera_to_world": [[1, 0, 0, 0]] * 4}]}):
        (tmp_path / "cameras.json").write_text(json.dumps(bad))  # last: no intrinsics
        with pytest.raises(ViewerError, match="cameras.json"):
            render_page(tmp_path)
    with pytest.raises(ViewerError, match="not a folder"):
        render_page(tmp_path / "missing")


def test_foreign_index_html_is_never_replaced(output_dir, copy_of):
    folder = copy_of(output_dir)
    (folder / "index.html").write_text("<html>someone else's page</html>")
    assert write_page(folder) is None
    with pytest.raises(ViewerError, match="not written by sv3d-trt"):
        save_page(folder)
    assert (folder / "index.html").read_text() == "<html>someone else's page</html>"
    result = CliRunner().invoke(main, ["view", str(folder)])
    assert result.exit_code == 1 and result.output.strip() == (
        f"error: {folder / 'index.html'} was not written by sv3d-trt; not replacing it")


def test_view_prints_the_page_without_a_display(output_dir, copy_of, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    folder = copy_of(output_dir)
    (folder / "run.json").unlink()
    result = CliRunner().invoke(main, ["view", str(folder)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"open in a browser: {(folder / 'index.html').resolve().as_uri()}"
    assert "No run.json here" in (folder / "index.html").read_text()  # re-rendered from the folder as it is now


def test_view_of_an_empty_folder_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["view", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: ") and "nothing to show" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_folder_the_page_cannot_show_never_fails_its_writer(tmp_path, caplog):
    """save_outputs with cameras that carry no poses (a custom pipeline's): the results are
    written, the page is skipped with a logged reason."""
    frames = synthetic_frames(np.random.default_rng())
    cameras = {"frames": [{"index": i} for i in range(len(frames))]}
    paths = save_outputs(tmp_path / "o", frames, cameras)
    assert paths["page"] is None and not (tmp_path / "o" / "index.html").exists()
    assert (tmp_path / "o" / "frame_020.png").is_file()
    assert "no viewer page" in caplog.text and "cameras.json is malformed" in caplog.text


def test_vendored_bundle_matches_its_record():
    """VENDORED.md names the bundle's sha256; build.sh pins the same versions."""
    import hashlib
    from importlib import resources

    assets = resources.files("sv3d_trt.viewer").joinpath("assets")
    record = assets.joinpath("VENDORED.md").read_text()
    digest = hashlib.sha256(assets.joinpath("three.bundle.min.js").read_bytes()).hexdigest()
    assert f"`three.bundle.min.js`: sha256 `{digest}`" in record
    build = assets.joinpath("vendor", "build.sh").read_text()
    assert "THREE=0.187.0" in build and "three@0.187.0" in record and "ESBUILD=0.28.2" in build
    assert "MIT" in assets.joinpath("LICENSE-three.txt").read_text()

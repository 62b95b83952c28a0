"""The output-folder page in a real headless Chromium, opened from file:// (issue 17): no
console errors, the scrubber and play button change the shown frame, the label is the frame's
elevation/azimuth from cameras.json, 21 camera frustums, a mesh canvas that is not blank."""
from __future__ import annotations

import io
import json
import shutil

import numpy as np
from PIL import Image

BACKGROUND = (0x2A, 0x2E, 0x36)  # viewer.js BACKGROUND: the 3D views' clear colour


def _shot(page, selector: str) -> np.ndarray:
    """(H, W, 3) uint8 screenshot of one element."""
    return np.asarray(Image.open(io.BytesIO(page.locator(selector).screenshot())).convert("RGB"))


def _ready(opened, mesh: bool = True) -> None:
    if mesh:
        opened.page.wait_for_function("window.sv3dViewer && (sv3dViewer.meshLoaded || sv3dViewer.meshError)",
                                      timeout=30_000)
    else:
        opened.page.wait_for_function("document.body.dataset.ready === '1'", timeout=30_000)
    opened.page.wait_for_timeout(300)  # the re-render after the texture decode


def _not_background_fraction(pixels: np.ndarray) -> float:
    return float((np.abs(pixels.astype(int) - BACKGROUND).max(-1) > 24).mean())


def test_page_loads_from_file_without_console_errors(open_page, output_dir):
    opened = open_page(output_dir / "index.html")
    _ready(opened)
    state = opened.page.evaluate("({loaded: sv3dViewer.meshLoaded, error: sv3dViewer.meshError})")
    assert state == {"loaded": True, "error": None}
    assert opened.errors == []
    assert opened.page.title() == "sv3d-trt: mug"
    folder = output_dir.resolve().as_uri()
    outside = [u for u in opened.requests if not (u.startswith(folder + "/") or u.startswith(("blob:", "data:")))]
    assert outside == [] and f"{folder}/frame_000.png" in opened.requests  # offline: nothing but the folder
    # Every <img> decoded (frames and the input view are plain files beside the page).
    assert opened.page.evaluate("[...document.images].every(i => i.complete && i.naturalWidth === 96)")


def test_scrubber_and_play_change_the_shown_frame(open_page, output_dir):
    cameras = json.loads((output_dir / "cameras.json").read_text())["frames"]
    opened = open_page(output_dir / "index.html")
    _ready(opened)
    page = opened.page
    before = _shot(page, "#frame-image")
    page.locator("#scrubber").fill("7")
    page.wait_for_function("document.getElementById('frame-image').complete")
    assert page.evaluate("sv3dViewer.frame") == 7
    assert page.locator("#frame-image").get_attribute("src") == "frame_007.png"
    label = page.locator("#frame-label").inner_text()
    assert label == (f"frame 7 · elevation {cameras[7]['elevation_deg']:.1f}° · "
                     f"azimuth {cameras[7]['azimuth_deg']:.1f}°")
    after = _shot(page, "#frame-image")
    assert np.abs(after.astype(int) - before.astype(int)).max() > 30  # the pixels shown changed
    page.locator("#scrubber").fill("20")
    assert page.locator("#frame-label").inner_text().endswith("azimuth 0.0° (input view)")
    page.locator("#frame-image").click()  # focus off the slider, which steps on arrows by itself
    page.keyboard.press("ArrowRight")  # wraps to frame 0
    assert page.evaluate("sv3dViewer.frame") == 0
    page.locator("#play").click()
    page.wait_for_function("sv3dViewer.frame >= 3", timeout=10_000)
    page.locator("#play").click()
    assert page.locator("#play").inner_text() == "play" and not page.evaluate("sv3dViewer.playing")


def test_21_cameras_with_the_current_one_highlighted(open_page, output_dir):
    opened = open_page(output_dir / "index.html")
    _ready(opened)
    page = opened.page
    assert page.evaluate("sv3dViewer.cameraCount") == 21
    assert page.locator("#camera-count").inner_text() == "21 cameras"
    first = _shot(page, "#cameras-canvas")
    assert _not_background_fraction(first) > 0.01
    page.locator("#scrubber").fill("10")
    page.wait_for_timeout(100)
    moved = _shot(page, "#cameras-canvas")
    highlight = np.array([0xFF, 0xA0, 0x30])
    orange = lambda im: np.abs(im.astype(int) - highlight).max(-1) < 40  # noqa: E731
    assert orange(first).sum() > 20 and orange(moved).sum() > 20  # one frustum drawn in the highlight colour
    ys, xs = np.nonzero(orange(first))
    ys2, xs2 = np.nonzero(orange(moved))
    # Frame 0 sits at azimuth 17 deg, frame 10 at 188 deg: the highlight moves across the view.
    assert np.hypot(xs.mean() - xs2.mean(), ys.mean() - ys2.mean()) > 50


def test_mesh_canvas_is_not_blank_and_wireframe_toggles(open_page, output_dir):
    opened = open_page(output_dir / "index.html")
    _ready(opened)
    page = opened.page
    solid = _shot(page, "#mesh-canvas")
    covered = _not_background_fraction(solid)
    assert covered > 0.05, f"mesh covers {covered:.1%} of its canvas"
    # The texture is drawn: many distinct colours, not one flat shade.
    assert len(np.unique(solid.reshape(-1, 3)[::7], axis=0)) > 200
    page.locator("#wireframe").check()
    page.wait_for_timeout(100)
    wire = _shot(page, "#mesh-canvas")
    assert 0.01 < _not_background_fraction(wire) < covered  # lines over the background
    page.mouse.move(*_centre(page, "#mesh-canvas"))
    page.mouse.down()
    page.mouse.move(_centre(page, "#mesh-canvas")[0] + 120, _centre(page, "#mesh-canvas")[1])
    page.mouse.up()
    assert np.abs(_shot(page, "#mesh-canvas").astype(int) - wire.astype(int)).max() > 30  # orbiting redraws
    assert opened.errors == []


def _centre(page, selector: str) -> tuple[float, float]:
    box = page.locator(selector).bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def test_folder_without_mesh_or_run(open_page, output_dir, copy_of):
    folder = copy_of(output_dir)
    (folder / "mesh.glb").unlink()
    (folder / "run.json").unlink()
    from sv3d_trt.viewer import write_page

    write_page(folder)
    opened = open_page(folder / "index.html")
    _ready(opened, mesh=False)
    assert opened.page.locator("#mesh-canvas").count() == 0
    assert opened.page.evaluate("sv3dViewer.cameraCount") == 21
    assert "No run.json here" in opened.page.locator("#facts").inner_text()
    assert opened.errors == []


def test_mesh_only_folder(open_page, output_dir, tmp_path):
    """`sv3d-trt mesh ... --out elsewhere/cat.glb`: a page with the mesh alone."""
    shutil.copy(output_dir / "mesh.glb", tmp_path / "cat.glb")
    from sv3d_trt.viewer import write_page

    write_page(tmp_path)
    opened = open_page(tmp_path / "index.html")
    _ready(opened)
    assert opened.page.locator("#orbit").count() == 0
    assert _not_background_fraction(_shot(opened.page, "#mesh-canvas")) > 0.05
    assert opened.errors == []


def test_without_webgl_the_orbit_still_works(browser_without_webgl, open_page, output_dir):
    opened = open_page(output_dir / "index.html", on=browser_without_webgl)
    page = opened.page
    page.wait_for_function("document.body.dataset.ready === '1'", timeout=30_000)
    assert page.locator(".no-webgl").count() == 2  # the cameras and mesh canvases gave way to a note
    assert page.locator("#frame-label").inner_text().startswith("frame 0 · elevation 10.0°")
    page.locator("#scrubber").fill("3")
    assert page.locator("#frame-image").get_attribute("src") == "frame_003.png"
    assert [e for e in opened.errors if e.startswith("pageerror")] == []

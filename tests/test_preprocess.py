"""Input image preprocessing (sv3d.md §4.1) and the typed errors for unusable inputs."""
import importlib.util
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from sv3d_trt.errors import ImageError
from sv3d_trt.preprocess import MAX_PIXELS, WORK_MAX_SIDE, example_image_path, load_image, prepare_image


def _reference_prepare(rgba: np.ndarray, size: int) -> np.ndarray:
    """The reference's steps written out independently (cv2.boundingRect replaced by row/col scans)."""
    a = rgba[..., 3] > 0
    rows, cols = np.flatnonzero(a.any(1)), np.flatnonzero(a.any(0))
    y, x, h, w = rows[0], cols[0], rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    side = rgba.shape[0]
    canvas = np.zeros((side, side, 4), np.uint8)
    c = side // 2
    canvas[c - h // 2:c - h // 2 + h, c - w // 2:c - w // 2 + w] = rgba[y:y + h, x:x + w]
    out = np.array(Image.fromarray(canvas).resize((size, size), Image.LANCZOS)) / 255.0
    rgb = out[..., :3] * out[..., -1:] + (1 - out[..., -1:])
    return (rgb * 255).astype(np.uint8)


def _object_box(rgb: np.ndarray, threshold: int = 247):
    """Bounding box (y0, y1, x0, x1) of non-white pixels (any channel <= threshold, as mesh.md)."""
    fg = (rgb <= threshold).any(axis=2)
    rows, cols = np.flatnonzero(fg.any(1)), np.flatnonzero(fg.any(0))
    return rows[0], rows[-1], cols[0], cols[-1]


def _random_rgba(rng, h=120, w=90):
    rgba = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    rgba[..., 3] = 0
    rgba[30:80, 20:70, 3] = rng.integers(1, 256, (50, 50), dtype=np.uint8)
    return rgba


def test_prepare_matches_reference_steps_on_random_rgba():
    rng = np.random.default_rng(0)
    rgba = _random_rgba(rng)
    prepared = prepare_image(Image.fromarray(rgba, "RGBA"), size=96)
    np.testing.assert_array_equal(prepared.rgb_uint8, _reference_prepare(rgba, 96))
    assert prepared.rgb_uint8.std() > 10  # non-trivial content
    assert prepared.tensor.shape == (1, 3, 96, 96) and prepared.tensor.dtype == np.float32
    expected = prepared.rgb_uint8.transpose(2, 0, 1)[None].astype(np.float32) / 255 * 2 - 1
    np.testing.assert_allclose(prepared.tensor, expected, rtol=0, atol=1e-7)
    assert prepared.tensor.min() >= -1 and prepared.tensor.max() == 1.0
    assert prepared.alpha_uint8.shape == (96, 96) and prepared.alpha_uint8[0, 0] == 0


@pytest.mark.parametrize("name", ["mug", "toy"])
def test_assets_give_centred_object_on_white(name):
    path = example_image_path(name)
    assert path.stat().st_size < 200_000
    prepared = prepare_image(load_image(path))
    rgb = prepared.rgb_uint8
    assert rgb.shape == (576, 576, 3) and rgb.dtype == np.uint8
    for corner in (rgb[:8, :8], rgb[:8, -8:], rgb[-8:, :8], rgb[-8:, -8:]):
        assert (corner >= 254).all()  # white background
    y0, y1, x0, x1 = _object_box(rgb)
    assert abs((y0 + y1) / 2 - 287.5) <= 3 and abs((x0 + x1) / 2 - 287.5) <= 3  # centred
    assert (y1 - y0) > 300 and (x1 - x0) > 250  # the object fills most of the frame
    centre = rgb[270:306, 270:306].reshape(-1, 3).mean(0)
    assert centre.max() - centre.min() > 60  # a saturated (red / blue) object at the centre, not background


def test_rgb_keying_soft_edges_holes_and_noise():
    rng = np.random.default_rng(1)
    h, w = 160, 200
    img = np.clip(rng.normal(200, 2.0, (h, w, 3)), 0, 255)  # noisy light-grey backdrop
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot(yy - 80, xx - 100)
    ring = (r <= 50) & (r >= 30)
    img[ring] = [40, 90, 160]
    img[(r > 49) & (r < 51)] = 0.85 * 200 + 0.15 * np.array([40, 90, 160])  # a faint anti-aliased rim
    rgba = np.asarray(load_image(Image.fromarray(img.astype(np.uint8), "RGB")))
    alpha = rgba[..., 3]
    assert (alpha[ring & (r < 49)] == 255).all()
    assert (alpha[r < 25] == 255).all()  # backdrop-coloured hole inside the object stays opaque
    assert (alpha[r > 55] == 0).all()  # noise specks removed: bbox is the object's
    rim = alpha[(r > 49.5) & (r < 50.5)]
    assert ((rim > 0) & (rim < 255)).any()  # soft edge


def test_mask_overrides_alpha_and_keying(tmp_path):
    rng = np.random.default_rng(2)
    busy = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    mask = np.zeros((64, 80), bool)
    mask[10:40, 20:50] = True
    for m in (mask, mask.astype(np.uint8), mask.astype(np.float32)):
        rgba = np.asarray(load_image(Image.fromarray(busy), mask=m))
        np.testing.assert_array_equal(rgba[..., 3], mask * 255)
        np.testing.assert_array_equal(rgba[..., :3], busy)
    path = tmp_path / "mask.png"
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)
    rgba_in = np.dstack([busy, np.full((64, 80), 255, np.uint8)])
    rgba = np.asarray(load_image(Image.fromarray(rgba_in, "RGBA"), mask=path))
    np.testing.assert_array_equal(rgba[..., 3], mask * 255)


def test_wide_object_grows_canvas_instead_of_crashing():
    rgba = np.zeros((100, 300, 4), np.uint8)
    rgba[40:60, 10:290] = [30, 60, 200, 255]  # 280 px wide bbox in a 100 px tall image
    rgb = prepare_image(Image.fromarray(rgba, "RGBA"), size=128).rgb_uint8
    y0, y1, x0, x1 = _object_box(rgb)
    assert x0 <= 3 and x1 >= 124  # the whole width fits, nothing cropped
    assert abs((y0 + y1) / 2 - 63.5) <= 1.5


def test_image_frame_ratio_sets_object_fraction():
    rgba = np.zeros((200, 200, 4), np.uint8)
    rgba[20:120, 50:150] = [200, 30, 30, 255]  # 100x100 object
    rgb = prepare_image(Image.fromarray(rgba, "RGBA"), size=100, image_frame_ratio=0.5).rgb_uint8
    y0, y1, x0, x1 = _object_box(rgb)
    assert 48 <= y1 - y0 + 1 <= 52 and 48 <= x1 - x0 + 1 <= 52
    with pytest.raises(ImageError, match="image_frame_ratio must be > 0"):
        prepare_image(Image.fromarray(rgba, "RGBA"), image_frame_ratio=0)


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not a picture")
    with pytest.raises(ImageError, match="unreadable or not an image"):
        load_image(path)
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "missing.png")


def test_rgb_with_busy_background():
    busy = np.random.default_rng(3).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    with pytest.raises(ImageError, match="without a uniform background.*--mask MASK.png, or an RGBA image"):
        load_image(Image.fromarray(busy))


def test_empty_mask_and_empty_alpha(tmp_path):
    rgb = np.random.default_rng(4).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    with pytest.raises(ImageError, match="mask is empty"):
        load_image(Image.fromarray(rgb), mask=np.zeros((64, 64), np.uint8))
    with pytest.raises(ImageError, match="mask is 10x64 px but the image is 64x64 px"):
        load_image(Image.fromarray(rgb), mask=np.ones((64, 10), np.uint8))
    clear = np.dstack([rgb, np.zeros((64, 64), np.uint8)])
    with pytest.raises(ImageError, match="empty alpha channel"):
        load_image(Image.fromarray(clear, "RGBA"))


def test_too_small():
    with pytest.raises(ImageError, match="is 20x64 px; need at least 32 px"):
        load_image(Image.new("RGBA", (20, 64), (255, 0, 0, 255)))


@pytest.mark.skipif(importlib.util.find_spec("rembg") is not None, reason="rembg is installed")
def test_rembg_requested_but_missing():
    with pytest.raises(ImageError, match="rembg is not installed"):
        load_image(Image.new("RGB", (64, 64), (10, 200, 30)), rembg=True)


def test_unknown_example():
    with pytest.raises(ImageError, match="unknown example"):
        example_image_path("teapot")


# --- hostile and unusual files: refused before decoding, or brought to what the model expects ---


def _png_header_only(path, width, height):
    """A PNG that declares width x height and holds no pixel data (a decompression bomb's header)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [12000, 20000])  # above our limit / above Pillow's bomb error too
def test_declared_giant_images_are_refused_before_decoding(tmp_path, side):
    path = _png_header_only(tmp_path / "bomb.png", side, side)
    with pytest.raises(ImageError, match=f"the limit is {MAX_PIXELS // 1_000_000}"):
        load_image(path)
    with pytest.raises(ImageError, match="the limit is"):
        load_image(Image.new("RGB", (64, 64)), mask=path)


def test_large_images_are_downscaled_before_keying(tmp_path):
    rng = np.random.default_rng(5)
    h, w = 2600, 3100
    img = np.full((h, w, 3), 210, np.uint8)
    img[600:2000, 900:2300] = rng.integers(0, 120, 3)
    path = tmp_path / "big.png"
    Image.fromarray(img).save(path)
    rgba = np.asarray(load_image(path))
    assert rgba.shape == (round(h * WORK_MAX_SIDE / w), WORK_MAX_SIDE, 4)
    alpha = rgba[..., 3] > 0
    rows, cols = np.flatnonzero(alpha.any(1)), np.flatnonzero(alpha.any(0))
    scale = WORK_MAX_SIDE / w
    assert abs(rows[0] - 600 * scale) <= 2 and abs(cols[-1] - 2299 * scale) <= 2
    mask = np.zeros((h, w), np.uint8)
    mask[100:1300, 200:1500] = 255  # a mask at the size the user made it
    alpha = np.asarray(load_image(path, mask=mask))[..., 3]
    assert alpha.shape == rgba.shape[:2]
    assert alpha[int(700 * scale), int(850 * scale)] == 255 and alpha[int(2000 * scale), int(2000 * scale)] == 0


def test_exif_orientation_is_applied(tmp_path):
    rgba = np.zeros((40, 64, 4), np.uint8)
    rgba[5:15, 40:60] = [200, 20, 20, 255]  # an off-centre object: the rotation is visible
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: the viewer turns it 90 degrees clockwise
    path = tmp_path / "rotated.png"
    Image.fromarray(rgba, "RGBA").save(path, exif=exif)
    loaded = np.asarray(load_image(path))
    np.testing.assert_array_equal(loaded, np.rot90(rgba, k=-1))


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    rng = np.random.default_rng(6)
    gray = np.full((64, 80), 50_000, np.uint16)  # uniform light background
    gray[16:48, 20:60] = rng.integers(0, 30_000, (32, 40))
    path = tmp_path / "gray16.png"
    Image.fromarray(gray).save(path)
    assert Image.open(path).mode == "I;16"
    rgba = np.asarray(load_image(path))
    expected = np.rint(gray.astype(np.float64) * 255 / 65535).astype(np.uint8)
    np.testing.assert_array_equal(rgba[..., 0], expected)
    assert (rgba[0, :, 3] == 0).all() and (rgba[20:44, 24:56, 3] == 255).all()
    with pytest.raises(ImageError, match="floating-point image"):
        load_image(Image.fromarray(rng.random((64, 64), dtype=np.float32)))


def test_opaque_alpha_counts_as_rgb(caplog):
    rng = np.random.default_rng(7)
    rgba = np.full((64, 64, 4), 255, np.uint8)
    rgba[..., :3] = 190
    rgba[20:40, 24:44, :3] = rng.integers(0, 100, 3)
    with caplog.at_level("WARNING"):
        alpha = np.asarray(load_image(Image.fromarray(rgba, "RGBA")))[..., 3]
    assert "opaque everywhere" in caplog.text
    assert (alpha[:10] == 0).all() and (alpha[22:38, 26:42] == 255).all()  # keyed like an RGB image
    busy = rng.integers(0, 256, (64, 64, 4), dtype=np.uint8)
    busy[..., 3] = 255
    with pytest.raises(ImageError, match="without a uniform background"):
        load_image(Image.fromarray(busy, "RGBA"))


def test_border_connected_is_the_flood_fill_it_replaces():
    """Same pixels as PIL's floodfill from a frame around the image (the earlier implementation,
    a minute per 4 megapixels), on random masks with holes, spirals of runs and islands."""
    from PIL import ImageDraw

    from sv3d_trt.preprocess import border_connected

    rng = np.random.default_rng(8)
    for density in (0.45, 0.55, 0.6, 0.7):
        mask = rng.random((97, 61)) < density
        frame = np.pad(mask.astype(np.uint8) * 255, 1, constant_values=255)
        fill = Image.fromarray(frame).copy()
        ImageDraw.floodfill(fill, (0, 0), 128)
        np.testing.assert_array_equal(border_connected(mask), np.asarray(fill)[1:-1, 1:-1] == 128)

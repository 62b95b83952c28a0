"""Input image -> the 576x576 white-background conditioning image SV3D expects.

Follows the sv3d branch of simple_video_sample.py (sv3d.md §4.1): an RGBA input is used as-is;
the object's alpha bounding box is pasted centred on a square transparent canvas, resized with
LANCZOS, composited on white and truncated to uint8. RGB inputs need a foreground: an explicit
mask, rembg on request (the reference always runs rembg), or - our default - keying out a
near-uniform background estimated from the border pixels.

Before any of that, a file is checked against MAX_PIXELS from its declared size (nothing is
decoded for a decompression bomb), turned upright by its EXIF orientation, brought to 8 bits
per channel (16-bit grayscale is scaled, not clipped) and downscaled to WORK_MAX_SIDE: the
output is 576 px, and keying a 100-megapixel image would take minutes and gigabytes.
"""
from __future__ import annotations

import importlib.util
import logging
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

from .errors import ImageError

log = logging.getLogger(__name__)

MIN_SIDE = 32  # smaller inputs carry too little detail to condition a 576x576 orbit
MAX_PIXELS = 100_000_000  # refused from the declared size, before decoding (e.g. 10000x10000)
WORK_MAX_SIDE = 2048  # larger inputs are downscaled (LANCZOS, aspect kept) before keying/resizing
REMBG_MAX_SIDE = 768  # the reference thumbnails RGB inputs to 768x768 before rembg
# Background keying, in 0..255 units of max-channel distance to the estimated background colour.
UNIFORM_TOL = 16  # a border pixel within this distance counts as background
UNIFORM_FRACTION = 0.9  # share of border pixels that must be background for the border to be "uniform"
SOFT_EDGE = 24  # width of the alpha ramp above the noise level

EXAMPLES = {"mug": "mug_rgba.png", "toy": "toy_rgb.png"}


def example_image_path(name: str) -> Path:
    """Path of a bundled example image: 'mug' (RGBA, transparent background) or 'toy' (RGB, grey background)."""
    if name not in EXAMPLES:
        raise ImageError(f"unknown example {name!r}; choose one of {sorted(EXAMPLES)}")
    return Path(str(resources.files("sv3d_trt") / "assets" / EXAMPLES[name]))


@dataclass(frozen=True, eq=False)
class PreparedImage:
    rgb_uint8: np.ndarray  # (size, size, 3) uint8, object on white
    tensor: np.ndarray  # (1, 3, size, size) float32 in [-1, 1]
    alpha_uint8: np.ndarray  # (size, size) uint8, the object's alpha after resizing


def _open(source, what: str) -> Image.Image:
    """Decode a path (or take a PIL image), check its size, apply EXIF orientation, make it 8-bit."""
    if isinstance(source, Image.Image):
        image = source
        _check_pixels(image, what, source)
    else:
        try:
            with warnings.catch_warnings():  # Pillow's own bomb warning: MAX_PIXELS decides here
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(source)
            _check_pixels(image, what, source)
            if image.format == "JPEG":  # decode at 1/2..1/8 scale in the DCT domain when that suffices
                image.draft(image.mode, (WORK_MAX_SIDE, WORK_MAX_SIDE))
            image.load()  # decode now, so a truncated file fails here and not later
        except Image.DecompressionBombError:
            raise ImageError(f"{what} {source} declares more than {2 * Image.MAX_IMAGE_PIXELS} px; "
                             f"the limit is {MAX_PIXELS} px (e.g. 10000x10000)") from None
        except FileNotFoundError:
            raise ImageError(f"{what} {source} not found") from None
        except IsADirectoryError:
            raise ImageError(f"{what} {source} is a folder, not an image file") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise ImageError(f"{what} {source} is unreadable or not an image ({e})") from None
    try:
        image = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, TypeError) as e:  # a damaged EXIF block
        raise ImageError(f"{what} {source} has unreadable EXIF data ({e})") from None
    return _eight_bit(image, what, source)


def _check_pixels(image: Image.Image, what: str, source) -> None:
    w, h = image.size
    if w * h > MAX_PIXELS:
        raise ImageError(f"{what} {source} is {w}x{h} px ({w * h / 1e6:.0f} megapixels); the limit is "
                         f"{MAX_PIXELS / 1e6:.0f} megapixels: downscale it first (it is resized to 576 px anyway)")


def _eight_bit(image: Image.Image, what: str, source) -> Image.Image:
    """16-bit grayscale ("I;16*", or "I" holding 0..65535) scaled to "L"; Pillow's convert would clip at 255."""
    if not (image.mode.startswith("I;16") or image.mode in ("I", "F")):
        return image
    values = np.asarray(image)
    if image.mode == "F" or values.min(initial=0) < 0 or values.max(initial=0) > 65535:
        raise ImageError(f"{what} {source} is a {'floating-point' if image.mode == 'F' else '32-bit'} image; "
                         "save it as an 8- or 16-bit PNG")
    return Image.fromarray(((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8), "L")


def _downscale(image: Image.Image) -> Image.Image:
    """At most WORK_MAX_SIDE px on the long side (LANCZOS; palette images are expanded first)."""
    if max(image.size) <= WORK_MAX_SIDE:
        return image
    if image.mode in ("1", "P", "PA"):  # Pillow resizes these with NEAREST only
        image = image.convert("RGBA" if _has_alpha(image) else "RGB")
    image = image.copy()
    image.thumbnail((WORK_MAX_SIDE, WORK_MAX_SIDE), Image.LANCZOS)
    return image


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info


def _load_mask(mask, size: tuple[int, int]) -> np.ndarray:
    """Mask as uint8 (H, W), white = object, from a path, a PIL image or an array (bool, 0/1, uint8 or [0, 1] floats)."""
    if isinstance(mask, np.ndarray):
        m = mask[..., 0] if mask.ndim == 3 else mask
        if np.issubdtype(m.dtype, np.floating) or m.max(initial=0) <= 1:
            m = np.clip(np.rint(m.astype(np.float64) * 255.0), 0, 255)  # bool, 0/1 or [0, 1] masks
        m = m.astype(np.uint8)
    else:
        m = np.asarray(_open(mask, "mask").convert("L"))
    if m.shape != (size[1], size[0]):
        raise ImageError(f"mask is {m.shape[1]}x{m.shape[0]} px but the image is {size[0]}x{size[1]} px")
    if not m.any():
        raise ImageError("mask is empty (all black): nothing marks the object")
    return m


def _key_out_background(rgb: np.ndarray, name: str) -> np.ndarray:
    """Alpha (H, W) uint8 for an object on a near-uniform background, or ImageError.

    The background colour is the median border pixel. Pixels connected to the border and
    within noise + SOFT_EDGE of that colour get a linear alpha ramp (soft edge); everything
    else, including background-coloured holes inside the object, stays opaque. A 3x3 opening
    then drops isolated noise specks so they do not inflate the object's bounding box.
    """
    h, w, _ = rgb.shape
    band = max(2, min(h, w) // 100)
    border = np.concatenate([rgb[:band].reshape(-1, 3), rgb[-band:].reshape(-1, 3),
                             rgb[:, :band].reshape(-1, 3), rgb[:, -band:].reshape(-1, 3)]).astype(np.int16)
    background = np.median(border, axis=0)
    d_border = np.abs(border - background).max(axis=1)  # (N,)
    near = d_border <= UNIFORM_TOL
    if near.mean() < UNIFORM_FRACTION:
        hint = "--rembg, " if importlib.util.find_spec("rembg") is not None else ""
        raise ImageError(
            f"{name} is an RGB image without a uniform background to remove (only {near.mean():.0%} of its "
            f"border pixels match the border colour); pass {hint}--mask MASK.png, or an RGBA image with a "
            "transparent background")
    t0 = float(np.clip(np.percentile(d_border[near], 99) + 2.0, 6.0, UNIFORM_TOL))
    t1 = t0 + SOFT_EDGE
    d = np.abs(rgb.astype(np.float32) - background.astype(np.float32)).max(axis=2)  # (H, W)
    ramp = np.clip((d - t0) / (t1 - t0), 0.0, 1.0)

    connected = border_connected(d < t1)  # the background-like pixels reachable from the border
    alpha = np.where(connected, ramp, 1.0)
    alpha8 = np.rint(alpha * 255.0).astype(np.uint8)
    opened = Image.fromarray(alpha8).filter(ImageFilter.MinFilter(3)).filter(ImageFilter.MaxFilter(3))
    return np.where(np.asarray(opened) > 0, alpha8, 0).astype(np.uint8)


def border_connected(mask: np.ndarray) -> np.ndarray:
    """The pixels of `mask` (H, W) bool 4-connected to the image border through `mask` (a flood
    fill from a frame around the image). Alternating row and column sweeps each mark every run
    of `mask` that holds a marked pixel, so a region reached with k turns takes about k sweeps:
    numpy over whole runs, where PIL's floodfill visits each pixel in Python (a minute per 4 MP)."""
    marked = np.zeros_like(mask)
    for edge in (np.s_[0, :], np.s_[-1, :], np.s_[:, 0], np.s_[:, -1]):
        marked[edge] = mask[edge]
    count = -1
    while count != (count := int(marked.sum())):
        marked = _spread_along_rows(mask, marked)
        marked = _spread_along_rows(mask.T, marked.T).T
    return marked


def _spread_along_rows(mask: np.ndarray, marked: np.ndarray) -> np.ndarray:
    """Mark each horizontal run of `mask` that holds a marked pixel."""
    starts = mask.copy()
    starts[:, 1:] &= ~mask[:, :-1]  # a run starts where the pixel to its left is not in mask
    runs = np.cumsum(starts.ravel()).reshape(mask.shape) * mask  # run id per pixel, 0 outside mask
    hit = np.zeros(int(runs.max()) + 1, bool)
    hit[runs[marked & mask]] = True
    hit[0] = False
    return hit[runs]


def _rembg(image: Image.Image) -> Image.Image:
    try:
        from rembg import remove
    except ImportError:
        raise ImageError("rembg is not installed: `pip install rembg`, or pass --mask MASK.png "
                         "or an RGBA image") from None
    image = image.copy()
    image.thumbnail((REMBG_MAX_SIDE, REMBG_MAX_SIDE), Image.LANCZOS)
    return remove(image.convert("RGBA"), alpha_matting=True)


def load_image(source, mask=None, rembg: bool = False) -> Image.Image:
    """Open an image (path or PIL) and return it as RGBA with the object in the alpha channel.

    RGBA inputs keep their alpha, unless it is opaque everywhere (then they count as RGB).
    `mask` (path, PIL image or array; white = object, at the image's own size) replaces the
    alpha. Otherwise an RGB input goes through rembg when `rembg=True`, else its near-uniform
    background is keyed out (ImageError when the background is not uniform).
    """
    name = str(source) if not isinstance(source, Image.Image) else "the image"
    image = _open(source, "image")
    if min(image.size) < MIN_SIDE:
        raise ImageError(f"{name} is {image.size[0]}x{image.size[1]} px; need at least {MIN_SIDE} px on each side")
    mask = None if mask is None else _load_mask(mask, image.size)  # checked at the size the user made it
    image = _downscale(image)
    rgba = None
    if mask is not None:
        rgba = _convert(image, "RGBA", name)
        rgba.putalpha(Image.fromarray(mask).resize(image.size, Image.LANCZOS))
    elif _has_alpha(image):
        rgba = _convert(image, "RGBA", name)
        if rgba.getextrema()[3][0] == 255:  # opaque everywhere: the alpha marks no background
            log.warning("%s: its alpha channel is opaque everywhere (no background marked); treating it as "
                        "an RGB image", name)
            rgba = None
    if rgba is None and rembg:
        rgba = _rembg(_convert(image, "RGB", name))
    elif rgba is None:
        rgb = np.asarray(_convert(image, "RGB", name))
        rgba = Image.fromarray(np.dstack([rgb, _key_out_background(rgb, name)]), "RGBA")
    if not np.asarray(rgba.getchannel("A")).any():
        raise ImageError(f"{name} has an empty alpha channel (fully transparent): no object to generate from")
    return rgba


def _convert(image: Image.Image, mode: str, name: str) -> Image.Image:
    try:
        return image.convert(mode)
    except (ValueError, OSError) as e:  # e.g. LAB or HSV images
        raise ImageError(f"{name}: a {image.mode} image cannot be converted to {mode} ({e})") from None


def prepare_image(image, size: int = 576, image_frame_ratio: float | None = None) -> PreparedImage:
    """Centre the object on a square canvas, resize to size x size and composite on white (sv3d.md §4.1).

    image: an RGBA PIL image from load_image (anything else is passed through load_image first).
    The canvas side is the image HEIGHT by default (the reference's `in_w` is shape[0]) or
    int(max(w, h)/image_frame_ratio) for the object's bbox w x h. Deviation: where the
    reference crashes because the bbox is larger than the canvas (a wide object in a tall
    image, or image_frame_ratio > 1), we grow the canvas to fit the bbox.
    """
    if not (isinstance(image, Image.Image) and image.mode == "RGBA"):
        image = load_image(image)
    if image_frame_ratio is not None and not image_frame_ratio > 0:
        raise ImageError(f"image_frame_ratio must be > 0, got {image_frame_ratio}")
    arr = np.asarray(image)  # (H, W, 4) uint8
    ys, xs = np.nonzero(arr[..., 3] > 0)  # cv2.boundingRect of the alpha > 0 mask
    if len(xs) == 0:
        raise ImageError("the image has an empty alpha channel (fully transparent): no object to generate from")
    x, y = xs.min(), ys.min()
    w, h = xs.max() - x + 1, ys.max() - y + 1
    side = int(max(w, h) / image_frame_ratio) if image_frame_ratio is not None else arr.shape[0]
    side = max(side, w, h)
    canvas = np.zeros((side, side, 4), dtype=np.uint8)  # transparent black, as the reference
    top, left = side // 2 - h // 2, side // 2 - w // 2
    canvas[top:top + h, left:left + w] = arr[y:y + h, x:x + w]
    # Pillow resizes RGBA in premultiplied alpha, as in the reference.
    rgba = np.asarray(Image.fromarray(canvas, "RGBA").resize((size, size), Image.LANCZOS)) / 255.0
    rgb = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])
    rgb_uint8 = (rgb * 255.0).astype(np.uint8)  # truncation, not rounding, as the reference
    # ToTensor then x*2-1, in float32 like torchvision.
    tensor = (rgb_uint8.astype(np.float32) / np.float32(255.0)) * np.float32(2.0) - np.float32(1.0)
    tensor = np.ascontiguousarray(tensor.transpose(2, 0, 1)[None])  # (1, 3, size, size)
    alpha_uint8 = np.rint(rgba[..., 3] * 255.0).astype(np.uint8)
    return PreparedImage(rgb_uint8=rgb_uint8, tensor=tensor, alpha_uint8=alpha_uint8)

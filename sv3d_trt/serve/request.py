"""An orbit request, checked in the ingress before any GPU work.

The fields arrive as multipart strings or JSON values; both go through `parse_request`, which
applies the CLI's own checks (sv3d_trt.preprocess for the image, sv3d_trt.cameras for the
camera path and the variant) and raises their typed errors, so the HTTP answer carries the
same message as `sv3d-trt generate`. An inline orbit (the HTTP form of `--orbit FILE`) is
checked by the orbit-file reader itself, from a temporary file.
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import io
import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from PIL import Image

from ..cameras import resolve_orbit
from ..errors import CameraError, RequestError
from ..preprocess import load_image

MAX_STEPS = 1000
NAMED_ORBITS = ("static", "dynamic")


class _NamedBytes(io.BytesIO):
    """Upload bytes that print as the uploaded file's name, so preprocess's messages name it."""

    def __init__(self, data: bytes, name: str):
        super().__init__(data)
        self.name = name

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:  # Pillow's "cannot identify image file %r"
        return repr(self.name)


@dataclass(frozen=True, eq=False)
class OrbitRequest:
    image: Image.Image  # RGBA, the object in the alpha channel (load_image's output)
    image_name: str
    seed: int = 23
    steps: int = 50
    orbit: str | list | dict | None = None  # "static" | "dynamic" | inline orbit JSON | None
    elevation: float | None = None
    mesh: bool = False

    def settings(self) -> dict:
        """The request's settings for status answers and run.json."""
        return {"image": self.image_name, "seed": self.seed, "steps": self.steps, "orbit": self.orbit,
                "elevation": self.elevation, "mesh": self.mesh}


@contextlib.contextmanager
def orbit_argument(orbit) -> Iterator[str | None]:
    """The `orbit` argument of Pipeline.generate for a request's orbit: a name, or the path of
    a temporary orbit file holding the inline JSON."""
    if orbit is None or isinstance(orbit, str):
        yield orbit
        return
    with tempfile.TemporaryDirectory(prefix="sv3d-orbit-") as tmp:
        path = Path(tmp) / "orbit"
        path.write_text(json.dumps(orbit))
        try:
            yield str(path)
        except CameraError as e:  # name the request field, not the temporary file
            raise CameraError(str(e).replace(f"orbit file {path}", "orbit")) from None


def _integer(value: Any, name: str, low: int, high: int) -> int:
    try:
        number = int(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else None
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        raise RequestError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return number


def _float(value: Any, name: str) -> float:
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise RequestError(f"{name} must be a finite number, got {value!r}")
    return number


def _boolean(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", ""):
        return False
    raise RequestError(f"{name} must be true or false, got {value!r}")


def _orbit(value: Any):
    """'static' / 'dynamic', or an inline orbit (JSON text in a form field, a JSON value in a body)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        if value in NAMED_ORBITS:
            return value
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise RequestError(f"orbit must be 'static', 'dynamic' or an orbit as JSON "
                               f"(21 [elevation, azimuth] pairs), got {value[:80]!r}") from None
    if not isinstance(value, (list, dict)):
        raise RequestError(f"orbit must be 'static', 'dynamic' or a list of [elevation, azimuth] pairs, got {value!r}")
    return value


def decode_base64_image(text: Any) -> bytes:
    if not isinstance(text, str) or not text:
        raise RequestError("a JSON body needs `image`: the image file as a base64 string")
    if text.startswith("data:") and "," in text:  # a data: URL
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError("`image` is not valid base64") from None


def parse_request(fields: dict, image_bytes: bytes | None, image_name: str, variant: str,
                  num_frames: int) -> OrbitRequest:
    """Check every field and the image as the CLI does; raises RequestError, ImageError, CameraError."""
    known = {"seed", "steps", "orbit", "elevation", "mesh"}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise RequestError(f"unknown field(s) {', '.join(unknown)}; expected image, {', '.join(sorted(known))}")
    if not image_bytes:
        raise RequestError("no image: send the file as the multipart field `image` (or base64 in a JSON body)")
    seed = _integer(fields.get("seed", 23), "seed", 0, 2**63 - 1)
    steps = _integer(fields.get("steps", 50), "steps", 2, MAX_STEPS)
    elevation = fields.get("elevation")
    elevation = None if elevation in (None, "") else _float(elevation, "elevation")
    orbit = _orbit(fields.get("orbit"))
    with orbit_argument(orbit) as orbit_arg:
        resolve_orbit(variant, orbit_arg, elevation_deg=elevation, num_frames=num_frames, seed=seed)
    image = load_image(_NamedBytes(image_bytes, image_name))  # keying and every image check, once
    return OrbitRequest(image=image, image_name=image_name, seed=seed, steps=steps, orbit=orbit,
                        elevation=elevation, mesh=_boolean(fields.get("mesh", False), "mesh"))

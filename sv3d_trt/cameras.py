"""Orbits, the UNet's camera/cond_aug vector y, and exported camera poses.

An orbit is 21 (elevation, azimuth) pairs in degrees; the LAST frame is the input view.
The reference re-references azimuths to that frame (sv3d.md §4.6): azimuth_rad_i =
deg2rad((a_i - a_20) mod 360), so frame 20 is always azimuth 0.

World frame for exported poses (mesh.md "Cameras"): z up, camera on a sphere of radius 2
looking at the origin, position r (cosE cosA, cosE sinA, sinE), azimuth from +x towards +y::

            z (up)
            |   camera at (E, A)
            |  /
            | /  E
            |/______ y        A = 90 deg
           /  \\ A
          /
         x                    A = 0: the input view (frame 20)
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CameraError
from .models.config import CAMERA_DIM, COND_AUG_DIM, VARIANTS, SV3DConfig

DEFAULT_ELEVATION_DEG = 10.0  # simple_video_sample.py default for sv3d_p
COND_AUG = 1e-5  # forced for both SV3D variants (sv3d.md §4.2)
FOV_DEG = SV3DConfig.fov_deg  # 33.8: vertical field of view of the SV3D training renders (models/config.py)
RADIUS = SV3DConfig.camera_radius


@dataclass(frozen=True, eq=False)
class Orbit:
    """Per-frame elevations and azimuths in degrees, as given (input view last)."""

    elevations_deg: np.ndarray  # (T,) float64
    azimuths_deg: np.ndarray  # (T,) float64

    def __post_init__(self):
        e = np.asarray(self.elevations_deg, dtype=np.float64)
        a = np.asarray(self.azimuths_deg, dtype=np.float64)
        if e.ndim != 1 or e.shape != a.shape:
            raise CameraError(f"orbit needs two 1-D lists of equal length, got shapes {e.shape} and {a.shape}")
        object.__setattr__(self, "elevations_deg", e)
        object.__setattr__(self, "azimuths_deg", a)

    @property
    def num_frames(self) -> int:
        return len(self.elevations_deg)

    @property
    def relative_azimuths_deg(self) -> np.ndarray:
        """Azimuths re-referenced to the input view: (a_i - a_last) mod 360, so the last is 0."""
        return np.mod(self.azimuths_deg - self.azimuths_deg[-1], 360.0)

    @property
    def polars_rad(self) -> np.ndarray:
        return np.deg2rad(90.0 - self.elevations_deg)

    @property
    def azimuths_rad(self) -> np.ndarray:
        return np.deg2rad(self.relative_azimuths_deg)


def static_orbit(num_frames: int = 21, elevation_deg: float = DEFAULT_ELEVATION_DEG) -> Orbit:
    """The reference default: constant elevation, azimuths linspace(0, 360, T+1)[1:] mod 360.

    Frame i sits at (i+1) 360/T degrees (17.142857, 34.285714, ...) and frame T-1 at 0.
    """
    _check_elevation(elevation_deg)
    azimuths = np.mod(np.linspace(0.0, 360.0, num_frames + 1)[1:], 360.0)
    return Orbit(np.full(num_frames, float(elevation_deg)), azimuths)


def dynamic_orbit(num_frames: int = 21, elevation_deg: float = DEFAULT_ELEVATION_DEG,
                  seed: int = 0) -> Orbit:
    """A deterministic, smooth orbit with a wobbling elevation and uneven azimuth steps.

    Our own construction, in the spirit of the streamlit demo's gen_dynamic_loop (sv3d.md §4.6)
    but closed-form and reproducible from `seed`:
    - elevation = elevation_deg + w(phi), phi_i = 2 pi (i+1)/T, w a sum of three sinusoids with
      1-3 cycles per orbit and random phases, each shifted so w(0) = w(2 pi) = 0: the loop is
      periodic and the input view (last frame) keeps elevation_deg. max |w| is rescaled to a
      random amplitude in [5, 10] degrees, reduced near the poles so that |elevation| < 90.
    - azimuth steps are 360/T times 1 + 0.3 sin(phi + p): smooth, positive, summing to 360,
      so frames 0..T-2 increase monotonically inside (0, 360) and the last frame is at 0.
    """
    _check_elevation(elevation_deg)
    rng = np.random.default_rng(seed)
    phi = 2.0 * np.pi * np.arange(1, num_frames + 1) / num_frames  # (T,), last = 2 pi
    wobble = np.zeros(num_frames)
    for cycles in (1, 2, 3):
        weight, phase = rng.uniform(0.3, 1.0), rng.uniform(0.0, 2.0 * np.pi)
        wobble += weight * (np.sin(cycles * phi + phase) - np.sin(phase))
    amplitude = max(0.0, min(rng.uniform(5.0, 10.0), 89.0 - abs(float(elevation_deg))))
    wobble *= amplitude / max(np.abs(wobble).max(), 1e-12)
    steps = 1.0 + 0.3 * np.sin(phi + rng.uniform(0.0, 2.0 * np.pi))  # (T,) all in [0.7, 1.3]
    azimuths = np.mod(np.cumsum(steps) * (360.0 / steps.sum()), 360.0)
    azimuths[-1] = 0.0  # the cumulative sum ends at 360 up to rounding
    return Orbit(float(elevation_deg) + wobble, azimuths)


def _check_elevation(elevation_deg) -> None:
    if not (isinstance(elevation_deg, (int, float, np.number)) and math.isfinite(elevation_deg)
            and -90.0 <= elevation_deg <= 90.0):
        raise CameraError(f"elevation {elevation_deg!r} is outside [-90, 90] degrees")


def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CameraError(f"{what} is {value!r}, not a finite number")
    return float(value)


MAX_ORBIT_FILE_BYTES = 1_000_000  # 21 pairs take under 2 kB; anything this big is not an orbit


def load_orbit_file(path, num_frames: int = 21) -> Orbit:
    """Read an orbit from JSON: {"elevations_deg": [...], "azimuths_deg": [...]} or [[elev, azim], ...].

    Elevations must lie in [-90, 90] and azimuths in [0, 360] degrees; the last entry is the
    input view (its azimuth becomes 0 after re-referencing). At the poles (+-90) the view
    direction is vertical and the image's right axis follows the azimuth (look_at_origin).
    """
    path = Path(path)
    try:
        if path.stat().st_size > MAX_ORBIT_FILE_BYTES:
            raise CameraError(f"orbit file {path} is {path.stat().st_size} bytes; the limit is "
                              f"{MAX_ORBIT_FILE_BYTES} (an orbit of {num_frames} pairs takes under 2 kB)")
        text = path.read_text()
    except FileNotFoundError:
        raise CameraError(f"orbit file {path} not found (use 'static', 'dynamic' or a JSON file)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CameraError(f"orbit file {path} is unreadable: {e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise CameraError(f"orbit file {path} is not valid JSON: {e}") from None
    except RecursionError:
        raise CameraError(f"orbit file {path} nests its JSON too deeply to be an orbit") from None

    if isinstance(data, dict) and {"elevations_deg", "azimuths_deg"} <= data.keys():
        elevations, azimuths = data["elevations_deg"], data["azimuths_deg"]
        for name, values in (("elevations_deg", elevations), ("azimuths_deg", azimuths)):
            if not isinstance(values, list):
                raise CameraError(f"orbit file {path}: {name} must be a list of {num_frames} numbers")
            if len(values) != num_frames:
                raise CameraError(f"orbit file {path}: {name} has the wrong length: "
                                  f"expected {num_frames}, got {len(values)}")
    elif isinstance(data, list):
        if len(data) != num_frames:
            raise CameraError(f"orbit file {path} has the wrong length: expected {num_frames} "
                              f"[elevation, azimuth] pairs, got {len(data)}")
        for i, pair in enumerate(data):
            if not (isinstance(pair, list) and len(pair) == 2):
                raise CameraError(f"orbit file {path}: entry {i} is {pair!r}, not an [elevation, azimuth] pair")
        elevations, azimuths = [p[0] for p in data], [p[1] for p in data]
    else:
        raise CameraError(f"orbit file {path} must hold {{\"elevations_deg\": [...], \"azimuths_deg\": [...]}} "
                          f"or a list of {num_frames} [elevation, azimuth] pairs")

    elevations = [_number(v, f"orbit file {path}: elevation at frame {i}") for i, v in enumerate(elevations)]
    azimuths = [_number(v, f"orbit file {path}: azimuth at frame {i}") for i, v in enumerate(azimuths)]
    for i, (e, a) in enumerate(zip(elevations, azimuths)):
        if not -90.0 <= e <= 90.0:
            raise CameraError(f"orbit file {path}: elevation {e} at frame {i} is outside [-90, 90] degrees")
        if not 0.0 <= a <= 360.0:
            raise CameraError(f"orbit file {path}: azimuth {a} at frame {i} is outside [0, 360] degrees")
    return Orbit(np.array(elevations), np.array(azimuths))


def resolve_orbit(variant: str, orbit: str | Path | None = None, elevation_deg: float | None = None,
                  num_frames: int = 21, seed: int = 0) -> Orbit | None:
    """Turn CLI-level camera options into an Orbit (sv3d_p) or None (sv3d_u, which has no camera input).

    orbit: None or "static" (default), "dynamic", or the path of an orbit JSON file.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    if variant == "sv3d_u":
        if (orbit is not None and orbit != "static") or elevation_deg is not None:
            raise CameraError("sv3d_u has no camera input: it always renders its fixed training orbit; "
                              "drop the orbit/elevation options or use sv3d_p")
        return None
    if elevation_deg is not None:
        _check_elevation(elevation_deg)
    elevation = DEFAULT_ELEVATION_DEG if elevation_deg is None else float(elevation_deg)
    if orbit is None or orbit == "static":
        return static_orbit(num_frames, elevation)
    if orbit == "dynamic":
        return dynamic_orbit(num_frames, elevation, seed)
    if elevation_deg is not None:
        raise CameraError("an elevation cannot be combined with an orbit file: the file sets every elevation")
    return load_orbit_file(orbit, num_frames)


def sinusoid_embedding(values: np.ndarray, dim: int) -> np.ndarray:
    """Timestep embedding of sgm util.timestep_embedding: [cos(t f_i), sin(t f_i)], f_i = 10000^(-i/half).

    values: (N,) -> (N, dim) float64. Computed in float64 (the reference uses float32; the two
    differ by < 1e-6 for the arguments SV3D feeds, |t| <= 2 pi).
    """
    half = dim // 2
    freqs = np.exp(-math.log(10000.0) * np.arange(half, dtype=np.float64) / half)  # (half,)
    args = np.asarray(values, dtype=np.float64)[:, None] * freqs[None]  # (N, half)
    return np.concatenate([np.cos(args), np.sin(args)], axis=1)


def camera_vector(variant: str, orbit: Orbit | None, num_frames: int = 21,
                  cond_aug: float = COND_AUG) -> np.ndarray:
    """The UNet's vector input y for one video, float32 (T, 256) for sv3d_u or (T, 1280) for sv3d_p.

    y = [sinusoid256(cond_aug) | sinusoid512(polar_rad) | sinusoid512(azimuth_rad)] (sv3d.md §1.3),
    polar = deg2rad(90 - elevation), azimuth re-referenced to the last frame. sv3d_p with
    orbit=None uses the default static orbit. The same y feeds both CFG halves (§4.5).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    parts = [sinusoid_embedding(np.full(num_frames, cond_aug), COND_AUG_DIM)]  # (T, 256)
    if variant == "sv3d_u":
        if orbit is not None:
            raise CameraError("sv3d_u has no camera input: pass orbit=None")
    else:
        orbit = static_orbit(num_frames) if orbit is None else orbit
        if orbit.num_frames != num_frames:
            raise CameraError(f"orbit has {orbit.num_frames} frames, expected {num_frames}")
        parts.append(sinusoid_embedding(orbit.polars_rad, CAMERA_DIM))  # (T, 512)
        parts.append(sinusoid_embedding(orbit.azimuths_rad, CAMERA_DIM))  # (T, 512)
    return np.concatenate(parts, axis=1).astype(np.float32)


def look_at_origin(elevation_deg: float, azimuth_deg: float, radius: float = RADIUS) -> np.ndarray:
    """Camera-to-world 4x4 (OpenCV axes: x right, y down, z forward) for a camera on the sphere.

    forward = -position/r; right = forward x z_world = (-sin A, cos A, 0), well defined at the
    poles too; down = forward x right, so (right, down, forward) is right-handed.
    """
    e, a = math.radians(elevation_deg), math.radians(azimuth_deg)
    position = radius * np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)])
    forward = -position / radius
    right = np.array([-math.sin(a), math.cos(a), 0.0])
    down = np.cross(forward, right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, down, forward, position
    return c2w


def intrinsics(image_size: int = 576, fov_deg: float = FOV_DEG) -> dict:
    """Pinhole intrinsics from the vertical field of view: f = (H/2)/tan(fov/2) (947.9 px at 576, as mesh.md)."""
    focal = (image_size / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    c = image_size / 2.0
    return {"width": image_size, "height": image_size, "fov_y_deg": fov_deg, "fx": focal, "fy": focal,
            "cx": c, "cy": c, "K": [[focal, 0.0, c], [0.0, focal, c], [0.0, 0.0, 1.0]]}


CONVENTION = (
    "World: right-handed, z up, object at the origin. Camera i sits at radius r on the sphere, position "
    "r*(cos(elev)cos(azim), cos(elev)sin(azim), sin(elev)), azimuth measured from +x towards +y, and looks at "
    "the origin. Azimuths are re-referenced so the last frame (the input view) is at azimuth 0. "
    "camera_to_world maps OpenCV camera coordinates (x right, y down, z forward) to world; its columns are the "
    "camera's right, down and forward axes and its position. world_to_camera is its inverse. Pixel (u, v) = "
    "(fx x/z + cx, fy y/z + cy) with (0, 0) at the top-left corner of the top-left pixel."
)


def cameras_record(elevations_deg, azimuths_deg, image_size: int = 576, fov_deg: float = FOV_DEG,
                   radius: float = RADIUS) -> dict:
    """The one cameras.json layout (written by `generate`, read by `read_cameras` and the mesh
    stage): the convention, the intrinsics and, per frame, index, elevation_deg, azimuth_deg,
    camera_to_world and world_to_camera for cameras on the sphere looking at the origin."""
    frames = []
    for i, (e, a) in enumerate(zip(elevations_deg, azimuths_deg)):
        c2w = look_at_origin(float(e), float(a), radius)
        w2c = np.eye(4)
        w2c[:3, :3] = c2w[:3, :3].T
        w2c[:3, 3] = -c2w[:3, :3].T @ c2w[:3, 3]
        frames.append({"index": i, "elevation_deg": float(e), "azimuth_deg": float(a),
                       "camera_to_world": c2w.tolist(), "world_to_camera": w2c.tolist()})
    return {"convention": CONVENTION, "radius": radius, "intrinsics": intrinsics(image_size, fov_deg),
            "frames": frames}


def cameras_json(orbit: Orbit | None, image_size: int = 576, fov_deg: float = FOV_DEG,
                 radius: float = RADIUS, num_frames: int = 21) -> dict:
    """JSON-ready description of the 21 output views: intrinsics, per-frame pose, conventions.

    orbit=None (sv3d_u): the elevation of SV3D_u's training orbit is not published, so we
    assume the static orbit at elevation 0 and say so in the file ("orbit_assumed": true);
    num_frames is used only then.
    """
    assumed = orbit is None
    if assumed:
        orbit = static_orbit(num_frames, 0.0)
    record = cameras_record(orbit.elevations_deg, orbit.relative_azimuths_deg, image_size, fov_deg, radius)
    frames = record.pop("frames")
    note = ("sv3d_u has no camera input; its training orbit elevation is unknown: assumed the static orbit "
            "(azimuth step 360/21) at elevation 0" if assumed else "orbit given to sv3d_p")
    return {**record, "orbit_assumed": assumed, "note": note, "input_view_index": orbit.num_frames - 1,
            "frames": frames}


@dataclass(frozen=True, eq=False)
class CameraSet:
    """What cameras.json says, as arrays: N pinhole cameras at their native image size."""

    w2c: np.ndarray  # (N, 4, 4) float64 world -> OpenCV camera
    intrinsics: np.ndarray  # (4,) fx, fy, cx, cy in pixels of a width x height image
    width: int
    height: int


def _matrix(frame: dict, key: str, index: int) -> np.ndarray:
    m = np.asarray(frame[key], dtype=np.float64)
    if m.shape != (4, 4) or not np.isfinite(m).all():
        raise CameraError(f"cameras: frame {index} {key} is not a finite 4x4 matrix")
    return m


def read_cameras(source) -> CameraSet:
    """The cameras of a cameras.json path or its parsed dict (`cameras_record` layout; only
    world_to_camera, else camera_to_world, and the intrinsics are read, extra keys ignored, so
    any calibrated rig works, not just orbits). CameraError says what is wrong."""
    if isinstance(source, (str, Path)):
        try:
            data = json.loads(Path(source).read_text())
        except FileNotFoundError:
            raise CameraError(f"cameras file {source} not found") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CameraError(f"cameras file {source} is unreadable: {e}") from None
    else:
        data = source
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list) or not data["frames"]:
        raise CameraError("cameras: expected an object with a non-empty 'frames' list")
    intr = data.get("intrinsics")
    if not isinstance(intr, dict):
        raise CameraError("cameras: missing 'intrinsics' {fx, fy, cx, cy, width, height}")
    try:
        width, height = int(intr["width"]), int(intr["height"])
        values = np.array([float(intr[k]) for k in ("fx", "fy", "cx", "cy")])
    except (KeyError, TypeError, ValueError) as e:
        raise CameraError(f"cameras: bad intrinsics ({e})") from None
    if not (np.isfinite(values).all() and values[0] > 0 and values[1] > 0 and width > 0 and height > 0):
        raise CameraError(f"cameras: bad intrinsics {values.tolist()} for {width}x{height}")
    w2c = []
    for i, frame in enumerate(data["frames"]):
        if not isinstance(frame, dict):
            raise CameraError(f"cameras: frame {i} is not an object")
        if "world_to_camera" in frame:
            w2c.append(_matrix(frame, "world_to_camera", i))
        elif "camera_to_world" in frame:
            w2c.append(np.linalg.inv(_matrix(frame, "camera_to_world", i)))
        else:
            raise CameraError(f"cameras: frame {i} has neither world_to_camera nor camera_to_world")
    return CameraSet(np.stack(w2c), values, width, height)

"""Orbits, the UNet camera vector y and exported poses (sv3d.md §1.3, §4.6; mesh.md "Cameras")."""
import json
import math

import numpy as np
import pytest

from sv3d_trt.cameras import (MAX_ORBIT_FILE_BYTES, Orbit, camera_vector, cameras_json, dynamic_orbit,
                              load_orbit_file, read_cameras, resolve_orbit, sinusoid_embedding, static_orbit)
from sv3d_trt.errors import CameraError


def _sinusoid_direct(t, dim):
    """Element-by-element form of util.timestep_embedding (cos first, max_period 10000)."""
    half = dim // 2
    out = np.empty(dim)
    for i in range(half):
        f = math.exp(-math.log(10000) * i / half)
        out[i], out[half + i] = math.cos(t * f), math.sin(t * f)
    return out


def test_static_orbit_reference_azimuths():
    orbit = static_orbit()
    assert orbit.num_frames == 21 and np.all(orbit.elevations_deg == 10.0)
    assert orbit.azimuths_deg[0] == pytest.approx(17.142857, abs=1e-6)
    assert orbit.azimuths_deg[1] == pytest.approx(34.285714, abs=1e-6)
    assert orbit.azimuths_deg[19] == pytest.approx(342.857143, abs=1e-6)
    assert orbit.azimuths_deg[20] == 0.0
    np.testing.assert_allclose(orbit.relative_azimuths_deg, orbit.azimuths_deg, atol=1e-9)
    assert orbit.polars_rad[0] == pytest.approx(1.396263, abs=1e-6)  # 80 degrees


def test_relative_azimuths_re_reference_to_last_frame():
    orbit = Orbit(np.zeros(3), np.array([100.0, 250.0, 50.0]))
    np.testing.assert_allclose(orbit.relative_azimuths_deg, [50.0, 200.0, 0.0])


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("elevation", [10.0, -30.0, 85.0, 89.5])
def test_dynamic_orbit_properties(seed, elevation):
    orbit = dynamic_orbit(21, elevation, seed)
    e, a = orbit.elevations_deg, orbit.azimuths_deg
    wobble = e - elevation
    assert np.abs(wobble).max() <= 10.0 + 1e-9 and np.all(np.abs(e) < 90.0)
    if abs(elevation) < 89.0:
        assert np.abs(wobble).max() > 0.5 * min(5.0, 89.0 - abs(elevation))  # it does wobble
        assert not np.allclose(dynamic_orbit(21, elevation, seed + 100).elevations_deg, e)
    else:
        np.testing.assert_allclose(wobble, 0.0, atol=1e-12)  # no room left below the pole
    assert e[-1] == pytest.approx(elevation, abs=1e-9)  # the input view keeps the given elevation
    assert a[-1] == 0.0 and np.all(np.diff(a[:-1]) > 0) and 0 < a[0] and a[-2] < 360
    steps = np.diff(np.append(0.0, np.append(a[:-1], 360.0)))
    assert steps.min() >= 0.69 * 360 / 21 and steps.max() <= 1.31 * 360 / 21
    again = dynamic_orbit(21, elevation, seed)
    np.testing.assert_array_equal(again.elevations_deg, e)
    assert not np.allclose(dynamic_orbit(21, elevation, seed + 100).azimuths_deg, a)


def test_sinusoid_embedding_matches_direct_formula():
    t = np.array([1e-5, 0.3, 6.1])
    emb = sinusoid_embedding(t, 512)
    for row, value in zip(emb, t):
        np.testing.assert_allclose(row, _sinusoid_direct(value, 512), rtol=1e-12, atol=1e-12)


def test_camera_vector_sv3d_p_default_orbit():
    y = camera_vector("sv3d_p", static_orbit())
    assert y.dtype == np.float32 and y.shape == (21, 1280)
    azimuths = np.deg2rad(np.mod(np.linspace(0, 360, 22)[1:], 360))
    for j in (0, 9, 20):
        expected = np.concatenate([_sinusoid_direct(1e-5, 256), _sinusoid_direct(math.radians(80.0), 512),
                                   _sinusoid_direct(azimuths[j], 512)])
        np.testing.assert_allclose(y[j], expected, rtol=0, atol=1e-7)
    # frame 20 is the input view: azimuth 0 -> [1..1, 0..0] in its last 512 entries
    np.testing.assert_allclose(y[20, 768:1024], 1.0)
    np.testing.assert_allclose(y[20, 1024:], 0.0)
    assert not np.allclose(y[0, 768:], y[1, 768:])


def test_camera_vector_sv3d_u_and_p_none():
    y = camera_vector("sv3d_u", None)
    assert y.shape == (21, 256)
    np.testing.assert_allclose(y[3], _sinusoid_direct(1e-5, 256), atol=1e-7)
    np.testing.assert_array_equal(camera_vector("sv3d_p", None), camera_vector("sv3d_p", static_orbit()))
    with pytest.raises(CameraError, match="sv3d_u has no camera input"):
        camera_vector("sv3d_u", static_orbit())
    with pytest.raises(CameraError, match="orbit has 5 frames, expected 21"):
        camera_vector("sv3d_p", static_orbit(5))


def _write(tmp_path, obj, name="orbit.json"):
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def test_load_orbit_file_both_formats(tmp_path):
    rng = np.random.default_rng(3)
    e = rng.uniform(-20, 40, 21).round(3).tolist()
    a = np.sort(rng.uniform(0, 360, 21)).round(3).tolist()
    o1 = load_orbit_file(_write(tmp_path, {"elevations_deg": e, "azimuths_deg": a}))
    o2 = load_orbit_file(_write(tmp_path, [[x, y] for x, y in zip(e, a)], "pairs.json"))
    for o in (o1, o2):
        np.testing.assert_array_equal(o.elevations_deg, e)
        np.testing.assert_array_equal(o.azimuths_deg, a)
    assert o1.relative_azimuths_deg[-1] == 0.0


GOOD_E, GOOD_A = [10.0] * 21, [float(x) for x in range(0, 210, 10)]


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not valid JSON"),
    ({"elevations_deg": GOOD_E[:20], "azimuths_deg": GOOD_A}, "expected 21, got 20"),
    ([[10.0, 0.0]] * 22, "expected 21 \\[elevation, azimuth\\] pairs, got 22"),
    ({"elevations_deg": GOOD_E[:5] + ["high"] + GOOD_E[6:], "azimuths_deg": GOOD_A},
     "elevation at frame 5 is 'high', not a finite number"),
    ({"elevations_deg": GOOD_E, "azimuths_deg": GOOD_A[:3] + [True] + GOOD_A[4:]},
     "azimuth at frame 3 is True, not a finite number"),
    ("[" + ",".join(["[10, NaN]"] * 21) + "]", "azimuth at frame 0 is nan, not a finite number"),
    ({"elevations_deg": GOOD_E[:7] + [95.0] + GOOD_E[8:], "azimuths_deg": GOOD_A},
     "elevation 95.0 at frame 7 is outside \\[-90, 90\\]"),
    ({"elevations_deg": GOOD_E, "azimuths_deg": GOOD_A[:2] + [-5.0] + GOOD_A[3:]},
     "azimuth -5.0 at frame 2 is outside \\[0, 360\\]"),
    ({"elevations_deg": GOOD_E, "azimuths_deg": GOOD_A[:20] + [361.0]}, "azimuth 361.0 at frame 20 is outside"),
    ({"elevations": GOOD_E}, "must hold"),
    ([[10.0, 0.0]] * 20 + [[1.0, 2.0, 3.0]], "entry 20 is \\[1.0, 2.0, 3.0\\], not an \\[elevation, azimuth\\] pair"),
])
def test_load_orbit_file_errors(tmp_path, content, message):
    with pytest.raises(CameraError, match=message):
        load_orbit_file(_write(tmp_path, content))


def test_load_orbit_file_hostile_files(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000)
    with pytest.raises(CameraError, match="nests its JSON too deeply"):
        load_orbit_file(deep)
    huge = tmp_path / "huge.json"
    huge.write_text(json.dumps([[10.0, 0.0]] * 21) + " " * MAX_ORBIT_FILE_BYTES)
    with pytest.raises(CameraError, match=f"the limit is {MAX_ORBIT_FILE_BYTES}"):
        load_orbit_file(huge)
    with pytest.raises(CameraError, match="unreadable"):
        load_orbit_file(tmp_path)  # a folder


def test_orbit_file_through_the_poles(tmp_path):
    """+-90 is accepted: a vertical view whose image right axis follows the azimuth."""
    elevations = [90.0, -90.0] + GOOD_E[2:]
    orbit = load_orbit_file(_write(tmp_path, {"elevations_deg": elevations, "azimuths_deg": GOOD_A}))
    assert np.isfinite(camera_vector("sv3d_p", orbit)).all()
    for frame in cameras_json(orbit)["frames"][:2]:
        c2w = np.array(frame["camera_to_world"])
        np.testing.assert_allclose(c2w[:3, :3].T @ c2w[:3, :3], np.eye(3), atol=1e-12)
        a = math.radians(frame["azimuth_deg"])
        np.testing.assert_allclose(c2w[:3, 0], [-math.sin(a), math.cos(a), 0.0], atol=1e-12)


def test_load_orbit_file_missing(tmp_path):
    with pytest.raises(CameraError, match="not found"):
        load_orbit_file(tmp_path / "nope.json")


def test_resolve_orbit(tmp_path):
    assert resolve_orbit("sv3d_u") is None and resolve_orbit("sv3d_u", "static") is None
    for kwargs in ({"orbit": "dynamic"}, {"elevation_deg": 20.0}, {"orbit": str(tmp_path / "o.json")}):
        with pytest.raises(CameraError, match="sv3d_u has no camera input"):
            resolve_orbit("sv3d_u", **kwargs)
    assert np.all(resolve_orbit("sv3d_p").elevations_deg == 10.0)
    assert np.all(resolve_orbit("sv3d_p", "static", 25.0).elevations_deg == 25.0)
    np.testing.assert_array_equal(resolve_orbit("sv3d_p", "dynamic", 5.0, seed=3).elevations_deg,
                                  dynamic_orbit(21, 5.0, 3).elevations_deg)
    path = _write(tmp_path, {"elevations_deg": GOOD_E, "azimuths_deg": GOOD_A})
    np.testing.assert_array_equal(resolve_orbit("sv3d_p", path).azimuths_deg, GOOD_A)
    with pytest.raises(CameraError, match="cannot be combined with an orbit file"):
        resolve_orbit("sv3d_p", path, 10.0)
    with pytest.raises(CameraError, match="elevation 120.0 is outside \\[-90, 90\\]"):
        resolve_orbit("sv3d_p", "static", 120.0)
    with pytest.raises(ValueError, match="unknown variant"):
        resolve_orbit("sv3d_x")


def _check_poses(cams, radius=2.0):
    for frame in cams["frames"]:
        c2w, w2c = np.array(frame["camera_to_world"]), np.array(frame["world_to_camera"])
        r, center = c2w[:3, :3], c2w[:3, 3]
        np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-12)
        assert np.linalg.det(r) == pytest.approx(1.0, abs=1e-12)
        np.testing.assert_allclose(c2w @ w2c, np.eye(4), atol=1e-12)
        np.testing.assert_allclose(c2w[3], [0, 0, 0, 1])
        assert np.linalg.norm(center) == pytest.approx(radius, rel=1e-12)
        np.testing.assert_allclose(r[:, 2], -center / radius, atol=1e-12)  # z forward looks at the origin
        e, a = math.radians(frame["elevation_deg"]), math.radians(frame["azimuth_deg"])
        np.testing.assert_allclose(center, radius * np.array([math.cos(e) * math.cos(a),
                                                               math.cos(e) * math.sin(a), math.sin(e)]), atol=1e-12)
        assert r[2, 1] <= 1e-12  # image y (down) never points up in the world: z-up, no roll
        origin_cam = w2c @ np.array([0, 0, 0, 1.0])
        np.testing.assert_allclose(origin_cam[:3], [0, 0, radius], atol=1e-12)


def test_cameras_json_sv3d_p_poses_and_intrinsics():
    orbit = dynamic_orbit(21, 20.0, 4)
    cams = cameras_json(orbit)
    json.dumps(cams)  # JSON-serialisable
    k = cams["intrinsics"]
    assert k["fx"] == k["fy"] == pytest.approx(288 / math.tan(math.radians(16.9)), rel=1e-12)
    assert k["fy"] == pytest.approx(947.9, abs=0.05) and k["cx"] == k["cy"] == 288.0
    assert cams["orbit_assumed"] is False and cams["input_view_index"] == 20 and len(cams["frames"]) == 21
    assert "z up" in cams["convention"] and "x right, y down, z forward" in cams["convention"]
    last = cams["frames"][20]
    assert last["azimuth_deg"] == 0.0
    np.testing.assert_allclose(np.array(last["camera_to_world"])[:3, 3],
                               2.0 * np.array([math.cos(math.radians(20)), 0.0, math.sin(math.radians(20))]))
    np.testing.assert_allclose([f["elevation_deg"] for f in cams["frames"]], orbit.elevations_deg)
    _check_poses(cams)
    # azimuth from +x towards +y: a camera at 90 degrees sits on +y, its right axis points to -x
    c2w = np.array(cameras_json(Orbit(np.zeros(2), np.array([90.0, 0.0])))["frames"][0]["camera_to_world"])
    np.testing.assert_allclose(c2w[:3, 3], [0, 2, 0], atol=1e-12)
    np.testing.assert_allclose(c2w[:3, 0], [-1, 0, 0], atol=1e-12)


def test_cameras_json_sv3d_u_assumed_and_poles():
    cams = cameras_json(None, image_size=64, radius=1.5)
    assert cams["orbit_assumed"] is True and "assumed" in cams["note"]
    assert all(f["elevation_deg"] == 0.0 for f in cams["frames"])
    assert cams["intrinsics"]["width"] == 64
    _check_poses(cams, radius=1.5)
    poles = Orbit(np.array([90.0, -90.0, 0.0]), np.array([30.0, 200.0, 0.0]))
    for frame in cameras_json(poles)["frames"]:
        r = np.array(frame["camera_to_world"])[:3, :3]
        assert np.isfinite(r).all() and np.linalg.det(r) == pytest.approx(1.0, abs=1e-12)


def test_one_cameras_json_layout_written_and_read(tmp_path):
    """generate's cameras.json and the mesh stage's orbits share one layout and one reader."""
    pytest.importorskip("torch")
    from sv3d_trt.mesh.cameras import orbit_cameras

    cams = cameras_json(dynamic_orbit(21, 15.0, 3), image_size=64)
    path = tmp_path / "cameras.json"
    path.write_text(json.dumps(cams))
    read = read_cameras(path)
    np.testing.assert_allclose(read.w2c, [f["world_to_camera"] for f in cams["frames"]], atol=0)
    assert read.width == read.height == 64 and read.intrinsics[0] == pytest.approx(cams["intrinsics"]["fx"])
    mesh = orbit_cameras([10.0, 20.0], [90.0, 0.0], image_size=64)
    assert set(mesh["frames"][0]) == set(cams["frames"][0]) and set(mesh["intrinsics"]) == set(cams["intrinsics"])
    c2w_only = {**cams, "frames": [{"camera_to_world": f["camera_to_world"]} for f in cams["frames"]]}
    np.testing.assert_allclose(read_cameras(c2w_only).w2c, read.w2c, atol=1e-12)
    with pytest.raises(CameraError, match="neither world_to_camera nor camera_to_world"):
        read_cameras({**cams, "frames": [{"c2w": f["camera_to_world"]} for f in cams["frames"]]})

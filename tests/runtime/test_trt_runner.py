"""The TensorRT runner's logic that needs no GPU: manifest checks, buffer planning, the per-step
address schedule, decode chunking, runtime-cache naming; plus the CUDA path on a GPU machine."""
from __future__ import annotations

import hashlib
import importlib.util
import json

import numpy as np
import pytest

from sv3d_trt.errors import BackendUnavailableError, StaleEngineError
from sv3d_trt.contract.manifest import Precision, engines_use_plugins, load_manifest, new_manifest_data, write_manifest
from sv3d_trt.models.config import get_config
from sv3d_trt.runtime.trt import check_engines, device_index
from sv3d_trt.runtime.trt.plan import (
    ALIGNMENT,
    decode_schedule,
    first_non_finite,
    plan_buffers,
    runtime_cache_name,
    sigma_slots,
    step_addresses,
)

RTX_VERSION = "1.7.1.116"


def _engine_entries(config, decode_chunk: int = 7) -> dict:
    """Manifest engine entries with the IO the exporter declares for `config` (graphs.graph_io)."""
    from sv3d_trt.export.graphs import graph_io

    return {
        name: {"file": f"{name}.engine", "precision": "fp16", "bytes": 64 + i,
               "sha256": hashlib.sha256(b"\1" * (64 + i)).hexdigest(),  # the bytes _engine_dir writes
               "source": {"file": f"{name}.onnx", "sha256": hashlib.sha256(name.encode()).hexdigest()},
               **io.to_json()}
        for i, (name, io) in enumerate(graph_io(config, decode_chunk).items())
    }


def _engine_dir(tmp_path, config, backend="tensorrt-rtx", version=RTX_VERSION, targets=("sm89", "sm120"),
                decode_chunk=7, plugins=None):
    engines = _engine_entries(config, decode_chunk)
    for entry in engines.values():
        (tmp_path / entry["file"]).write_bytes(b"\1" * entry["bytes"])
    export_info = {"config": config.name, "variant": config.variant, "precision": "fp16"}
    if plugins is not None:
        export_info["plugins"] = plugins
    data = new_manifest_data(backend=backend, builder_version=version, targets=list(targets),
                             precision=Precision.FP16, onnx_dir=tmp_path / "onnx", export_info=export_info,
                             engines=engines)
    if plugins is not None:
        data["export"]["plugins"] = plugins
    write_manifest(tmp_path, data)
    return load_manifest(tmp_path)


@pytest.fixture(scope="module")
def tiny_p():
    return get_config("tiny", "sv3d_p")


@pytest.fixture(scope="module")
def entries(tiny_p):
    return _engine_entries(tiny_p)


# ---- buffer planning ---------------------------------------------------------------------


def test_plan_shares_chained_tensors_and_leaves_step_tensors_out(entries, tiny_p):
    plan = plan_buffers(entries, tiny_p)
    # CLIP writes the buffer the context engine reads; the context writes what the step reads.
    assert plan.bindings["clip"]["clip_embedding"] == plan.bindings["context"]["clip_embedding"] == "clip_embedding"
    attn2 = [n for n in plan.tensors["context"] if n.startswith("attn2_")]
    assert len(attn2) == 32
    for name in attn2:
        assert plan.bindings["context"][name] == plan.bindings["denoise_step"][name] == name
    # The two images are separate buffers: the VAE sees the cond_aug-noised one.
    assert plan.bindings["clip"]["image"] != plan.bindings["vae_encoder"]["image"]
    # x, x_next, sigma, sigma_next are bound per step into the latent/sigma slot arrays.
    assert not {"x", "x_next", "sigma", "sigma_next"} & set(plan.bindings["denoise_step"])
    assert plan.bindings["denoise_step"]["vector"] == "denoise_step.vector"
    assert plan.buffers["denoise_step.vector"].shape == (21, tiny_p.unet.adm_in_channels)


def test_plan_sizes_are_aligned_and_counted_once(entries, tiny_p):
    plan = plan_buffers(entries, tiny_p)
    assert all(b.slot_bytes % ALIGNMENT == 0 and b.slot_bytes >= b.nbytes for b in plan.buffers.values())
    assert plan.fixed_bytes == sum(b.total_bytes for b in plan.buffers.values())
    assert plan.buffers["clip_embedding"].nbytes == 32 * 4
    assert plan.buffers["denoise_step.cfg_scales"].slot_bytes == ALIGNMENT  # 84 bytes, padded
    # decoder: one input slot per chunk (21 frames / 7), two output slots alternating
    assert plan.decode_chunk == 7
    assert plan.buffers["vae_decoder.latent"].slots == 3 and plan.buffers["vae_decoder.frames"].slots == 2
    latents = plan.latents(50)
    assert latents.slots == 51 and latents.shape == (21, 4, 8, 8)
    assert plan.sigmas(50).total_bytes == 51 * ALIGNMENT


def test_plan_refuses_engines_of_another_variant(entries):
    with pytest.raises(StaleEngineError, match=r"denoise_step.vector.*sv3d_u.*\n.*rebuild with: REBUILD"):
        plan_buffers(entries, get_config("tiny", "sv3d_u"), rebuild="REBUILD")


def test_plan_refuses_missing_engines_and_tensors(entries, tiny_p):
    partial = {k: v for k, v in entries.items() if k != "context"}
    with pytest.raises(StaleEngineError, match="no context engine"):
        plan_buffers(partial, tiny_p)
    renamed = json.loads(json.dumps(entries))
    renamed["denoise_step"]["outputs"][0]["name"] = "out"
    with pytest.raises(StaleEngineError, match="denoise_step has no output 'x_next'"):
        plan_buffers(renamed, tiny_p)


def test_plan_refuses_a_broken_chain(entries, tiny_p):
    broken = json.loads(json.dumps(entries))
    broken["context"]["outputs"][5]["shape"] = [2, 7]
    with pytest.raises(StaleEngineError, match="context.attn2_05 .* does not fit denoise_step.attn2_05"):
        plan_buffers(broken, tiny_p)
    unfed = json.loads(json.dumps(entries))
    unfed["context"]["outputs"] = unfed["context"]["outputs"][:-1]
    with pytest.raises(StaleEngineError, match="attn2_31.*not produced by the context engine"):
        plan_buffers(unfed, tiny_p)


def test_plan_refuses_io_dtypes_it_cannot_stage(entries, tiny_p):
    odd = json.loads(json.dumps(entries))
    for dtype in ("float8_e4m3fn", "bfloat16"):
        odd["clip"]["inputs"][0]["dtype"] = dtype
        with pytest.raises(StaleEngineError, match=f"clip.image has IO dtype '{dtype}'"):
            plan_buffers(odd, tiny_p)
    if importlib.util.find_spec("ml_dtypes") is not None:
        import ml_dtypes  # noqa: F401 - registers bfloat16 with numpy; the refusal must not depend on it

        with pytest.raises(StaleEngineError, match="clip.image has IO dtype 'bfloat16'"):
            plan_buffers(odd, tiny_p)


def test_odd_decode_chunk_pads_the_last_chunk(tiny_p):
    plan = plan_buffers(_engine_entries(tiny_p, decode_chunk=8), tiny_p)
    assert plan.decode_chunk == 8 and plan.buffers["vae_decoder.latent"].slots == 3
    assert decode_schedule(21, 8, 2) == [(0, 0, 8, 0), (1, 8, 16, 1), (2, 16, 21, 0)]
    assert decode_schedule(21, 21, 1) == [(0, 0, 21, 0)]
    assert decode_schedule(21, 7, 2) == [(0, 0, 7, 0), (1, 7, 14, 1), (2, 14, 21, 0)]


# ---- the captured loop's addressing ------------------------------------------------------


def test_step_addresses_chain_the_slots():
    latent_base, sigma_base = 1 << 32, (1 << 33) + 4096
    slot, sigma_slot = 13056, ALIGNMENT
    steps = step_addresses(latent_base, slot, sigma_base, sigma_slot, 5)
    assert len(steps) == 5
    assert steps[0] == {"x": latent_base, "x_next": latent_base + slot, "sigma": sigma_base,
                        "sigma_next": sigma_base + sigma_slot}
    for a, b in zip(steps, steps[1:]):
        assert b["x"] == a["x_next"] and b["sigma"] == a["sigma_next"]  # step i+1 reads what step i wrote
    assert steps[-1]["x_next"] == latent_base + 5 * slot  # the result is slot `steps`
    addresses = [v for s in steps for v in s.values()]
    assert all(a % ALIGNMENT == 0 for a in addresses)


def test_sigma_slots_hold_one_value_per_aligned_slot(entries, tiny_p):
    from sv3d_trt.sampler import edm_sigmas

    plan = plan_buffers(entries, tiny_p)
    spec = plan.sigmas(4)
    sigmas = edm_sigmas(4)
    host = sigma_slots(sigmas, spec)
    assert host.shape == (5, ALIGNMENT // 4) and host.dtype == np.float32
    assert host.nbytes == spec.total_bytes
    np.testing.assert_array_equal(host[:, 0], sigmas.astype(np.float32))
    assert host[:, 0].min() == 0.0 and host[0, 0] == np.float32(700.0)
    assert not host[:, 1:].any()


def test_first_non_finite_names_the_step_that_wrote_it():
    slots = np.random.default_rng(0).standard_normal((6, 10)).astype(np.float32)
    assert first_non_finite(slots) is None
    slots[4, 3] = np.nan  # written by step 3 (slot 0 is the noise)
    slots[5] = np.inf
    assert first_non_finite(slots) == 3
    slots[1, 0] = -np.inf
    assert first_non_finite(slots) == 0


# ---- manifest checks at load -------------------------------------------------------------


def test_matching_manifest_loads(tmp_path, tiny_p):
    manifest = _engine_dir(tmp_path, tiny_p)
    config, plan = check_engines(manifest, "tensorrt-rtx", RTX_VERSION, (8, 9))
    assert config == tiny_p and plan.decode_chunk == 7


def test_other_gpu_or_version_or_flavour_is_stale(tmp_path, tiny_p):
    manifest = _engine_dir(tmp_path, tiny_p)
    with pytest.raises(StaleEngineError, match=r"this GPU is sm86.*sv3d-trt build .*--target sm86"):
        check_engines(manifest, "tensorrt-rtx", RTX_VERSION, (8, 6))
    with pytest.raises(StaleEngineError, match=r"this is 1\.8\.0.*sv3d-trt build"):
        check_engines(manifest, "tensorrt-rtx", "1.8.0", (8, 9))
    with pytest.raises(StaleEngineError, match="built with tensorrt-rtx, loading with tensorrt"):
        check_engines(manifest, "tensorrt", RTX_VERSION, (8, 9))


def test_rtx_on_hopper_points_to_full_tensorrt(tmp_path, tiny_p):
    manifest = _engine_dir(tmp_path, tiny_p, targets=("sm89",))
    with pytest.raises(BackendUnavailableError, match="Hopper.*--backend tensorrt"):
        check_engines(manifest, "tensorrt-rtx", RTX_VERSION, (9, 0))


def test_missing_or_truncated_engine_is_stale(tmp_path, tiny_p):
    manifest = _engine_dir(tmp_path, tiny_p)
    (tmp_path / "vae_decoder.engine").write_bytes(b"\1")
    with pytest.raises(StaleEngineError, match="vae_decoder.engine has 1 bytes.*Rebuild with: sv3d-trt build"):
        check_engines(manifest, "tensorrt-rtx", RTX_VERSION, (8, 9))
    (tmp_path / "clip.engine").unlink()
    with pytest.raises(StaleEngineError, match="clip.engine is missing"):
        check_engines(manifest, "tensorrt-rtx", RTX_VERSION, (8, 9))


def test_manifest_without_config_is_stale(tmp_path, tiny_p):
    manifest = _engine_dir(tmp_path, tiny_p)
    del manifest.data["export"]["config"]
    with pytest.raises(StaleEngineError, match="does not record the SV3D config"):
        check_engines(manifest, "tensorrt-rtx", RTX_VERSION, (8, 9))


def test_plugin_registration_follows_the_export():
    assert engines_use_plugins({"export": {"plugins": True}}, {"plugins": False}) is True
    assert engines_use_plugins({"export": {}}, {"plugins": False}) is False
    assert engines_use_plugins({"export": {}}, None) is None  # unknown: the runner registers it


def test_runtime_cache_is_per_architecture():
    assert runtime_cache_name((8, 9)) == "runtime_cache.sm89.bin"
    assert runtime_cache_name((12, 0)) != runtime_cache_name((8, 6))


def test_device_index():
    assert device_index("cuda") == 0 and device_index("cuda:2") == 2 and device_index(1) == 1
    with pytest.raises(BackendUnavailableError, match="CUDA GPU"):
        device_index("cpu")


# ---- the no-GPU path ---------------------------------------------------------------------


def _cuda_available() -> bool:
    try:
        from sv3d_trt.runtime import cuda

        cuda.set_device(0)
        return True
    except Exception:  # noqa: BLE001 - any failure means no usable GPU here
        return False


def test_engines_without_a_gpu_say_so(tmp_path, tiny_p):
    pytest.importorskip("tensorrt_rtx")
    if _cuda_available():
        pytest.skip("this machine has a GPU")
    from sv3d_trt.runtime import Pipeline

    _engine_dir(tmp_path, tiny_p)
    with pytest.raises(BackendUnavailableError, match="needs an NVIDIA GPU"):
        Pipeline.from_artifacts(tmp_path)


# ---- on a GPU: the engines against onnxruntime on the same inputs ------------------------


@pytest.fixture
def trt_module():
    """TensorRT or TensorRT-RTX, or a skip saying which is missing: asked for before the ONNX
    fixture, so a GPU machine without TensorRT skips before exporting anything."""
    from sv3d_trt.contract.tensorrt import import_tensorrt

    try:
        return import_tensorrt()
    except BackendUnavailableError as e:
        pytest.skip(str(e))


@pytest.mark.gpu
def test_engines_match_ort_on_gpu(trt_module, tmp_path, tiny_onnx_dir):
    """Build tiny engines for this GPU, then compare every stage with the ort backend on the
    same inputs; the captured loop must equal the step-by-step protocol path."""
    from sv3d_trt.export.build import build_engines
    from sv3d_trt.runtime.backend import Conditioning
    from sv3d_trt.runtime.ort import OrtBackend
    from sv3d_trt.runtime.trt import TensorRTBackend, TensorRTRTXBackend
    from sv3d_trt.contract.tensorrt import backend_of
    from sv3d_trt.sampler import edm_sigmas, triangle_cfg_scales
    from tests.conftest import rel_err

    flavour = backend_of(trt_module)
    manifest = build_engines(tiny_onnx_dir, tmp_path, backend=flavour)
    trt = (TensorRTRTXBackend if flavour == "tensorrt-rtx" else TensorRTBackend)(manifest.directory)
    ort = OrtBackend(tiny_onnx_dir, device="cpu", threads=2)
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32)
    noised = image + np.float32(1e-5) * rng.standard_normal(image.shape).astype(np.float32)
    (clip, latent), (ref_clip, ref_latent) = trt.encode(image, noised), ort.encode(image, noised)
    assert rel_err(clip, ref_clip) < 1e-3 and rel_err(latent, ref_latent) < 1e-3
    cond = Conditioning(ref_clip, ref_latent, np.zeros((64, 64, 3), np.uint8))
    vector = rng.standard_normal((21, trt.config.unet.adm_in_channels)).astype(np.float32)
    scales = triangle_cfg_scales(21).astype(np.float32)
    x0 = rng.standard_normal((21, 4, 8, 8)).astype(np.float32)
    sigmas = edm_sigmas(4)
    ours = trt.denoise(trt.prepare(cond, vector, scales), x0, sigmas)
    again = trt.denoise(trt.prepare(cond, vector, scales), x0, sigmas)  # graph replay
    stepwise = _stepwise_denoise(trt, trt.prepare(cond, vector, scales), x0, sigmas)
    ref = ort.denoise(ort.prepare(cond, vector, scales), x0, sigmas)
    assert np.abs(ref).mean() > 1e-2
    assert rel_err(ours, ref) < 1e-3 and np.array_equal(ours, again) and rel_err(stepwise, ours) < 1e-5
    frames, ref_frames = trt.decode(ref / 0.18215, 14), ort.decode(ref / 0.18215, 14)
    assert rel_err(frames, ref_frames) < 1e-3
    trt.close()  # saves the runtime cache (no longer a side effect of decode)
    if flavour == "tensorrt-rtx":
        assert trt.runtime_cache_path.is_file()


def _stepwise_denoise(backend, state, x0, sigmas):
    """The protocol's generic loop (one `step` per sigma pair) on a backend that overrides it."""
    from sv3d_trt.runtime.backend import Backend

    return Backend.denoise(backend, state, x0, sigmas)

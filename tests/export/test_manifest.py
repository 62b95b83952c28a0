"""manifest.json: verify re-hashes engines and sources; check_compatible refuses engines from
another TensorRT, GPU architecture or variant, and says how to rebuild."""
from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from sv3d_trt.cli import main
from sv3d_trt.errors import StaleEngineError
from sv3d_trt.contract.manifest import (
    MANIFEST_NAME,
    Precision,
    arch_name,
    check_compatible,
    load_manifest,
    parse_arch,
    precision_supported,
    unsupported_precision_message,
    verify_engines,
)


@pytest.fixture
def engines(built_fp16, export_fp16, tmp_path):
    """Private copies of the built engines and of their export, manifest pointing at the copy."""
    onnx_dir, out = tmp_path / "onnx", tmp_path / "engines"
    shutil.copytree(export_fp16, onnx_dir)
    shutil.copytree(built_fp16, out)
    data = json.loads((out / MANIFEST_NAME).read_text())
    data["onnx_dir"] = str(onnx_dir)
    (out / MANIFEST_NAME).write_text(json.dumps(data))
    return out, onnx_dir


def _edit_manifest(directory, **changes):
    data = json.loads((directory / MANIFEST_NAME).read_text())
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            data[section][field] = value
        else:
            data[key] = value
    (directory / MANIFEST_NAME).write_text(json.dumps(data))
    return load_manifest(directory)


def test_verify_passes_on_fresh_build(engines):
    out, onnx_dir = engines
    manifest = verify_engines(out)
    assert manifest.data["onnx_dir"] == str(onnx_dir)
    assert all(len(e["sha256"]) == 64 and len(e["source"]["sha256"]) == 64 for e in manifest.engines.values())


def test_verify_catches_one_flipped_engine_byte(engines):
    out, _ = engines
    path = out / "denoise_step.engine"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(StaleEngineError, match=r"denoise_step: engine .* corrupt .*\n.*rebuild with: sv3d-trt build --onnx"):
        verify_engines(out)


def test_verify_catches_swapped_onnx(engines):
    out, onnx_dir = engines
    shutil.copyfile(onnx_dir / "clip.onnx", onnx_dir / "denoise_step.onnx")
    with pytest.raises(StaleEngineError, match=r"denoise_step: source .*denoise_step.onnx changed since the build"):
        verify_engines(out)
    with pytest.raises(StaleEngineError, match="source .* is missing"):
        verify_engines(out, onnx_dir=out)  # explicit directory without the sources


def test_verify_without_sources_checks_engines_only(engines):
    out, onnx_dir = engines
    shutil.rmtree(onnx_dir)  # engines shipped without their export
    assert set(verify_engines(out).engines) == {"clip", "denoise_step"}


def test_verify_missing_engine_and_manifest(engines, tmp_path):
    out, _ = engines
    (out / "clip.engine").unlink()
    with pytest.raises(StaleEngineError, match="clip: engine .* is missing"):
        verify_engines(out)
    with pytest.raises(StaleEngineError, match="holds no engines built by `sv3d-trt build`"):
        verify_engines(tmp_path)


def test_unknown_manifest_format(engines):
    out, _ = engines
    with pytest.raises(StaleEngineError, match="format 99"):
        _edit_manifest(out, format=99)


def test_check_compatible_accepts_matching(engines):
    out, _ = engines
    manifest = load_manifest(out)
    check_compatible(manifest, "tensorrt-rtx", manifest.builder_version, (8, 9), variant="sv3d_p")
    check_compatible(manifest, "tensorrt-rtx", manifest.builder_version, "8.9")


def test_other_tensorrt_version_refused_with_rebuild_command(engines):
    out, onnx_dir = engines
    manifest = _edit_manifest(out, builder__version="1.6.0.1")
    with pytest.raises(StaleEngineError) as e:
        check_compatible(manifest, "tensorrt-rtx", "1.7.1.116", (8, 9))
    message = str(e.value)
    assert "built by tensorrt-rtx 1.6.0.1, this is 1.7.1.116" in message
    assert f"sv3d-trt build --onnx {onnx_dir} --out {out} --backend tensorrt-rtx --precision fp16 --target sm89" in message


def test_other_variant_backend_and_gpu_refused(engines):
    out, _ = engines
    manifest = load_manifest(out)
    with pytest.raises(StaleEngineError, match="built for sv3d_p, requested sv3d_u"):
        check_compatible(manifest, "tensorrt-rtx", manifest.builder_version, (8, 9), variant="sv3d_u")
    with pytest.raises(StaleEngineError, match=r"built for sm89, this GPU is sm120.*--target sm120"):
        check_compatible(manifest, "tensorrt-rtx", manifest.builder_version, (12, 0))
    with pytest.raises(StaleEngineError, match=r"built with tensorrt-rtx, loading with tensorrt.*--backend tensorrt --precision"):
        check_compatible(manifest, "tensorrt", "10.9.0", (9, 0))
    faked = _edit_manifest(out, export__variant="sv3d_u")
    with pytest.raises(StaleEngineError, match="built for sv3d_u, requested sv3d_p"):
        check_compatible(faked, "tensorrt-rtx", manifest.builder_version, (8, 9), variant="sv3d_p")


@pytest.mark.parametrize("text, expected", [("sm89", (8, 9)), ("sm_120", (12, 0)), ("8.6", (8, 6)), ("75", (7, 5)), ((12, 1), (12, 1))])
def test_parse_arch(text, expected):
    assert parse_arch(text) == expected
    assert arch_name(text) == f"sm{expected[0]}{expected[1]}"


def test_precision_support_table():
    assert precision_supported(Precision.FP8, "sm89") and precision_supported(Precision.FP8, "sm120")
    assert not precision_supported(Precision.FP8, "sm86") and not precision_supported(Precision.BF16, "sm75")
    assert precision_supported(Precision.INT8, "sm75")
    assert unsupported_precision_message(Precision.FP16, ["sm75", "sm121"], ["sm75"]) is None
    message = unsupported_precision_message(Precision.FP8, ["sm80", "sm89"], ["sm75", "sm80", "sm89", "sm120"])
    assert message == "precision fp8 is not supported on sm80; it needs compute capability >= 8.9 (supported targets here: sm89, sm120)"


# ---- verify never says ok for what the runtime could not run ------------------------------------


def _edit_export(onnx_dir, **changes):
    info = json.loads((onnx_dir / "export.json").read_text())
    info.update(changes)
    (onnx_dir / "export.json").write_text(json.dumps(info))


@pytest.mark.parametrize("change, message", [
    ({"variant": "sv3d_u"}, r"built from a sv3d_p export, but .* holds a sv3d_u one \(variant\)"),
    ({"config": "full"}, r"built from a tiny export, but .* holds a full one \(config\)"),
    ({"graphs": {"vae_decoder": {"file": "vae_decoder.onnx"}}},
     r"vae_decoder: the export has this graph, the manifest no engine for it"),
    ({"precision": 16}, r"export.json is malformed: 'precision' must be a string"),
])
def test_verify_refuses_engines_of_another_export(engines, change, message):
    out, onnx_dir = engines
    _edit_export(onnx_dir, **change)
    with pytest.raises(StaleEngineError, match=message):
        verify_engines(out)


@pytest.mark.parametrize("changes, message", [
    ({"engines": {}}, "'engines' is empty"),
    ({"targets": "sm89"}, "'targets' must be a list"),
    ({"targets": ["sm89", "ampere"]}, "'targets' must list GPU architectures"),
    ({"export__variant": "sv3d_q"}, "'variant' is 'sv3d_q'"),
])
def test_verify_refuses_malformed_manifests(engines, changes, message):
    out, _ = engines
    with pytest.raises(StaleEngineError, match=message):
        _edit_manifest(out, **changes)
    r = CliRunner().invoke(main, ["verify", str(out)])
    assert r.exit_code == 1 and r.output.startswith("error: ") and "ok:" not in r.output and message.split("'")[1] in r.output


def test_engine_file_outside_the_folder_is_refused(engines, tmp_path):
    out, _ = engines
    data = json.loads((out / MANIFEST_NAME).read_text())
    outside = tmp_path / "elsewhere.engine"
    shutil.copy(out / data["engines"]["clip"]["file"], outside)
    data["engines"]["clip"]["file"] = str(outside)  # same bytes, same sha256: only the path is wrong
    (out / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(StaleEngineError, match="must name a file inside"):
        verify_engines(out)


def test_verify_refuses_a_graph_dropped_from_the_manifest_without_the_export(engines):
    """The build records which graphs it built, so a manifest that lost one is refused even
    when the export folder is gone (nothing else to compare against)."""
    out, onnx_dir = engines
    data = json.loads((out / MANIFEST_NAME).read_text())
    assert sorted(data["export"]["graphs"]) == sorted(data["engines"]) and len(data["engines"]) > 1
    dropped = sorted(data["engines"])[0]
    del data["engines"][dropped]
    (out / MANIFEST_NAME).write_text(json.dumps(data))
    shutil.rmtree(onnx_dir)
    with pytest.raises(StaleEngineError, match=f"{dropped}: the export has this graph, the manifest no engine"):
        verify_engines(out)


def test_verify_refuses_an_unknown_recorded_graph(engines):
    out, _ = engines
    with pytest.raises(StaleEngineError, match="export.graphs: 'unet2' is not one of the graphs"):
        _edit_manifest(out, export__graphs=["clip", "unet2"])

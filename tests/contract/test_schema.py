"""manifest.json / export.json of the wrong shape: one StaleEngineError naming the field, never a
KeyError or TypeError later; file entries cannot point outside their folder; a changed graph is
refused by the reader a runtime uses."""
from __future__ import annotations

import copy
import hashlib
import json
import re

import pytest

from sv3d_trt.contract import schema
from sv3d_trt.contract.manifest import EXPORT_INFO, MANIFEST_NAME, load_manifest, read_export_info
from sv3d_trt.errors import StaleEngineError

DIGEST = hashlib.sha256(b"x").hexdigest()


def _manifest() -> dict:
    io = {"inputs": [{"name": "image", "shape": [1, 3, 64, 64], "dtype": "float32"}],
          "outputs": [{"name": "clip_embedding", "shape": [1, 32], "dtype": "float32"}]}
    return {"format": 1, "builder": {"backend": "tensorrt-rtx", "version": "1.7.1"}, "targets": ["sm89", "sm120"],
            "precision": "fp16", "onnx_dir": "/nowhere", "export": {"config": "tiny", "variant": "sv3d_p",
                                                                    "precision": "fp16"},
            "engines": {"clip": {"file": "clip.engine", "sha256": DIGEST, "bytes": 10, "precision": "fp16",
                                 "source": {"file": "clip.onnx", "sha256": DIGEST, "external_data": {}}, **io}}}


def _export() -> dict:
    return {"config": "tiny", "variant": "sv3d_p", "precision": "fp32", "decode_chunk": 7, "plugins": False,
            "graphs": {"clip": {"file": "clip.onnx", "external_data": ["clip.onnx.data"],
                                "source": {"file": "clip.onnx", "sha256": DIGEST,
                                           "external_data": {"clip.onnx.data": DIGEST}}}}}


def _set(path: str, value):
    """An edit of the record at a dotted path ("engines.clip.file"); value DELETE removes the key."""
    def edit(record):
        *parents, last = path.split(".")
        for key in parents:
            record = record[key]
        if value is DELETE:
            del record[last]
        else:
            record[last] = value
    return edit


DELETE = object()

MANIFEST_CASES = [
    (_set("builder", ["tensorrt-rtx"]), "'builder' must be an object, not list"),
    (_set("builder.backend", "onnxruntime"), "'onnxruntime', not one of tensorrt, tensorrt-rtx"),
    (_set("targets", "sm89"), "'targets' must be a list"),
    (_set("targets", []), "'targets' must list GPU architectures"),
    (_set("targets", ["sm89", "gpu"]), "'targets' must list GPU architectures"),
    (_set("targets", [89]), "'targets' must list GPU architectures"),
    (_set("precision", "int4"), "'precision' is 'int4', not one of fp32, fp16, bf16, int8, fp8"),
    (_set("engines", {}), "'engines' is empty"),
    (_set("engines", ["clip"]), "'engines' must be an object"),
    (_set("engines.unet", {}), "engines: 'unet' is not one of the graphs"),
    (_set("engines.clip.file", "/etc/passwd"), "must name a file inside"),
    (_set("engines.clip.file", "../other/clip.engine"), "must name a file inside"),
    (_set("engines.clip.file", ".."), "must name a file inside"),
    (_set("engines.clip.file", 7), "engines.clip.'file' must be a string, not int"),
    (_set("engines.clip.sha256", "abc"), "engines.clip.sha256 must be a sha256 hex digest"),
    (_set("engines.clip.bytes", "10"), "engines.clip.'bytes' must be an integer"),
    (_set("engines.clip.bytes", True), "engines.clip.'bytes' must be an integer"),
    (_set("engines.clip.source", DELETE), "engines.clip.'source' is missing"),
    (_set("engines.clip.source.file", "../clip.onnx"), "engines.clip.source.file '../clip.onnx' must name a file"),
    (_set("engines.clip.source.external_data", {"/abs/w.bin": DIGEST}), "external_data name '/abs/w.bin'"),
    (_set("engines.clip.inputs", [{"name": "image", "shape": [-1, 3], "dtype": "float32"}]), "fixed shapes"),
    (_set("engines.clip.inputs", "image"), "engines.clip.'inputs' must be a list"),
    (_set("export.variant", "sv3d_x"), "'variant' is 'sv3d_x', not one of sv3d_u, sv3d_p"),
    (_set("export", "tiny"), "'export' must be an object"),
]


def test_manifest_that_is_not_an_object_or_not_json(tmp_path):
    path = tmp_path / MANIFEST_NAME
    for text, message in (("[1, 2]", "is malformed: not a JSON object"), ("[" * 100_000, "RecursionError"),
                          ('{"format": 1, "a": "\udcff"}', "unreadable")):
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
        with pytest.raises(StaleEngineError, match=message):
            load_manifest(tmp_path)


def test_valid_records_pass(tmp_path):
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(_manifest()))
    assert load_manifest(tmp_path).targets == ["sm89", "sm120"]
    (tmp_path / EXPORT_INFO).write_text(json.dumps(_export()))
    assert read_export_info(tmp_path)["decode_chunk"] == 7


EXPORT_CASES = [
    (_set("config", "huge"), "'config' is 'huge', not one of full, tiny"),
    (_set("precision", DELETE), "'precision' is missing"),
    (_set("precision", "int8"), "'precision' is 'int8', not one of fp32, fp16, bf16"),
    (_set("decode_chunk", "7"), "'decode_chunk' must be an integer"),
    (_set("decode_chunk", 0), "not a positive number of frames"),
    (_set("plugins", "yes"), "'plugins' must be true or false"),
    (_set("graphs", ["clip"]), "'graphs' must be an object"),
    (_set("graphs.clip", "clip.onnx"), "graphs.clip must be an object"),
    (_set("graphs.clip.file", "/tmp/evil.onnx"), "must name a file inside"),
    (_set("graphs.clip.external_data", "clip.onnx.data"), "graphs.clip.'external_data' must be a list"),
    (_set("graphs.clip.external_data", ["../w"]), "external_data entry '../w' must name a file"),
    (_set("graphs.clip.source.sha256", 5), "graphs.clip.source.'sha256' must be a string"),
]


@pytest.mark.parametrize("record, edit, message", [("manifest", *case) for case in MANIFEST_CASES]
                         + [("export", *case) for case in EXPORT_CASES])
def test_malformed_records_are_refused(tmp_path, record, edit, message):
    data, name, read = {"manifest": (_manifest(), MANIFEST_NAME, load_manifest),
                        "export": (_export(), EXPORT_INFO, read_export_info)}[record]
    edit(data)
    (tmp_path / name).write_text(json.dumps(data))
    with pytest.raises(StaleEngineError, match="is malformed: .*" + re.escape(message)):
        read(tmp_path)


def test_runtime_reader_rehashes_the_graphs(tmp_path):
    """What `run --onnx` loads through: a graph changed after export is refused, like `verify --onnx`."""
    graph, weights = tmp_path / "clip.onnx", tmp_path / "clip.onnx.data"
    graph.write_bytes(b"graph bytes")
    weights.write_bytes(b"weight bytes")
    info = _export()
    digest = {name: hashlib.sha256(content).hexdigest() for name, content in
              (("clip.onnx", b"graph bytes"), ("clip.onnx.data", b"weight bytes"))}
    info["graphs"]["clip"]["source"] = {"file": "clip.onnx", "sha256": digest["clip.onnx"],
                                        "external_data": {"clip.onnx.data": digest["clip.onnx.data"]}}
    (tmp_path / EXPORT_INFO).write_text(json.dumps(info))
    assert read_export_info(tmp_path, require_graphs=("clip",))["graphs"]["clip"]["file"] == "clip.onnx"
    weights.write_bytes(b"other weights")
    with pytest.raises(StaleEngineError, match=r"clip: external weights .*clip.onnx.data missing or changed"):
        read_export_info(tmp_path, require_graphs=("clip",))
    old = copy.deepcopy(info)
    del old["graphs"]["clip"]["source"]
    (tmp_path / EXPORT_INFO).write_text(json.dumps(old))
    with pytest.raises(StaleEngineError, match="records no sha256 for clip"):
        read_export_info(tmp_path, require_graphs=("clip",))


def test_schema_names_match_the_models():
    from sv3d_trt.export.onnx_export import EXPORT_PRECISIONS
    from sv3d_trt.models.config import PRESETS, VARIANTS

    assert set(schema.CONFIG_NAMES) == set(PRESETS) and schema.VARIANT_NAMES == VARIANTS
    assert schema.EXPORT_PRECISIONS == EXPORT_PRECISIONS

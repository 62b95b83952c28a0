"""The TemporalAttention TensorRT plugin builds ahead of time on this CPU-only machine with
TensorRT-RTX (target SM89), from a plugin-node ONNX export of the tiny config's attention sites,
in a process that never imports torch. Full TensorRT is exercised only where it is installed."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sv3d_trt.kernels import aot
from sv3d_trt.kernels.onnx_op import emit_plugin_nodes
from sv3d_trt.kernels.trt_plugin import PLUGIN_NAME, PLUGIN_NAMESPACE, PLUGIN_VERSION, register_temporal_attention_plugin

trt_rtx = pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX (pip install tensorrt-rtx-cu13) is not installed")


def build_in_child(onnx_path: Path, engine_path: Path, backend: str) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, str(onnx_path), str(engine_path), backend],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def plugin_onnx(tiny_sites, tmp_path):
    model, inputs = tiny_sites
    model, inputs = model.half(), tuple(x.half() for x in inputs)
    path = tmp_path / "sites_plugin.onnx"
    with emit_plugin_nodes() as extra:
        torch.onnx.export(model, inputs, path, dynamo=True, **extra)
    return path


def test_plugin_graph_builds_with_rtx_for_sm89_without_torch(plugin_onnx, tmp_path):
    engine_path = tmp_path / "sites.engine"
    report = build_in_child(plugin_onnx, engine_path, "tensorrt-rtx")
    assert report["plugin_layers"] == 4
    assert not report["torch_imported"]
    engine = engine_path.read_bytes()
    assert len(engine) == report["engine_bytes"] > 0
    # The fields of each plugin layer carry the sm_89 cubin (ELF) of the kernel.
    assert b"_temporal_attention_fwd" in engine and b"\x7fELF" in engine


def test_runtime_plugin_is_rebuilt_from_serialized_fields():
    """What deserialization does: the creator gets the engine's fields in the RUNTIME phase."""
    creator = register_temporal_attention_plugin(trt_rtx, archs=(89,))
    registry = trt_rtx.get_plugin_registry()
    assert registry.get_creator(PLUGIN_NAME, PLUGIN_VERSION, PLUGIN_NAMESPACE) is not None
    kernel = aot.compile_temporal_attention(89, "fp16", 21, 16)
    fields = trt_rtx.PluginFieldCollection([
        trt_rtx.PluginField("frames", np.array([21], dtype=np.int32), trt_rtx.PluginFieldType.INT32),
        trt_rtx.PluginField("kernels", np.frombuffer(aot.pack([kernel]), dtype=np.int8), trt_rtx.PluginFieldType.INT8),
    ])
    plugin = creator.create_plugin("site", fields, trt_rtx.TensorRTPhase.RUNTIME)
    assert plugin.frames == 21 and plugin.kernels == [kernel]
    again = creator.create_plugin("site", plugin.get_fields_to_serialize(), trt_rtx.TensorRTPhase.RUNTIME)
    assert again.kernels == [kernel]


def test_node_without_frames_is_rejected():
    creator = register_temporal_attention_plugin(trt_rtx, archs=(89,))
    with pytest.raises(ValueError, match="frames"):
        creator.create_plugin("site", trt_rtx.PluginFieldCollection([]), trt_rtx.TensorRTPhase.BUILD)


@pytest.mark.skipif(not __import__("importlib").util.find_spec("tensorrt"), reason="full TensorRT is not installed")
def test_plugin_graph_builds_with_full_tensorrt(plugin_onnx, tmp_path):
    report = build_in_child(plugin_onnx, tmp_path / "sites_trt.engine", "tensorrt")
    assert report["plugin_layers"] == 4 and report["engine_bytes"] > 0 and not report["torch_imported"]


if __name__ == "__main__":  # child of build_in_child: a product-like process without torch
    from sv3d_trt.kernels.trt_plugin import register_temporal_attention_plugin as register
    from sv3d_trt.runtime.trt_import import ensure_parser_library, import_tensorrt

    onnx_path, engine_path, backend = sys.argv[1:4]
    trt = import_tensorrt(backend)
    ensure_parser_library()
    register(trt, archs=(89,))
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(onnx_path):
        raise SystemExit("; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)))
    config = builder.create_builder_config()
    if backend == "tensorrt-rtx":
        config.num_compute_capabilities = 1
        config.set_compute_capability(trt.ComputeCapability.SM89, 0)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise SystemExit("engine build failed")
    Path(engine_path).write_bytes(bytes(engine))
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    print(json.dumps({
        "engine_bytes": engine.nbytes,
        "plugin_layers": sum(layer.type == trt.LayerType.PLUGIN_V3 for layer in layers),
        "torch_imported": "torch" in sys.modules,
    }))

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

from sv3d_trt.errors import BackendUnavailableError
from sv3d_trt.kernels import aot
from sv3d_trt.kernels.onnx_op import emit_plugin_nodes
from sv3d_trt.kernels.trt_plugin import PLUGIN_NAME, PLUGIN_NAMESPACE, PLUGIN_VERSION, register_temporal_attention_plugin
from sv3d_trt.contract.tensorrt import import_tensorrt

trt_rtx = pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX (pip install tensorrt-rtx-cu13) is not installed")


CHILD = Path(__file__).with_name("trt_build_child.py")


def build_in_child(onnx_path: Path, engine_path: Path, backend: str) -> dict:
    """Build in a fresh process: no torch there (a product's), and a parser abort cannot take
    pytest down with it."""
    proc = subprocess.run(
        [sys.executable, str(CHILD), str(onnx_path), str(engine_path), backend],
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
    # The fields of each plugin layer carry the sm_89 cubin of the kernel, byte for byte.
    assert aot.compile_temporal_attention(89, "fp16", 21, 16).cubin in engine


def test_runtime_plugin_is_rebuilt_from_serialized_fields():
    """What deserialization does: the creator gets the engine's fields in the RUNTIME phase."""
    creator = register_temporal_attention_plugin(trt_rtx, archs=(89,))
    registry = trt_rtx.get_plugin_registry()
    assert registry.get_creator(PLUGIN_NAME, PLUGIN_VERSION, PLUGIN_NAMESPACE) is not None
    kernel = aot.compile_temporal_attention(89, "fp16", 21, 16)
    frames = np.array([21], dtype=np.int32)
    blob = np.frombuffer(aot.pack([kernel]), dtype=np.int8)  # alive while fields point into it
    fields = trt_rtx.PluginFieldCollection([
        trt_rtx.PluginField("frames", frames, trt_rtx.PluginFieldType.INT32),
        trt_rtx.PluginField("kernels", blob, trt_rtx.PluginFieldType.INT8),
    ])
    plugin = creator.create_plugin("site", fields, trt_rtx.TensorRTPhase.RUNTIME)
    assert plugin.frames == 21 and plugin.kernels == [kernel]
    again = creator.create_plugin("site", plugin.get_fields_to_serialize(), trt_rtx.TensorRTPhase.RUNTIME)
    assert again.kernels == [kernel]


def test_node_without_frames_is_rejected():
    creator = register_temporal_attention_plugin(trt_rtx, archs=(89,))
    with pytest.raises(ValueError, match="frames"):
        creator.create_plugin("site", trt_rtx.PluginFieldCollection([]), trt_rtx.TensorRTPhase.BUILD)


def full_tensorrt_usable() -> bool:
    try:
        import_tensorrt("tensorrt")
    except BackendUnavailableError:
        return False
    return True


@pytest.mark.skipif(not full_tensorrt_usable(), reason="full TensorRT is not installed (its libraries come from NVIDIA's index)")
def test_plugin_graph_builds_with_full_tensorrt(plugin_onnx, tmp_path):
    report = build_in_child(plugin_onnx, tmp_path / "sites_trt.engine", "tensorrt")
    assert report["plugin_layers"] == 4 and report["engine_bytes"] > 0 and not report["torch_imported"]

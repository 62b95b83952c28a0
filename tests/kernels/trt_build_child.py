"""Child process of test_trt_plugin.py: build an engine from a plugin-node ONNX file the way a
product would, without torch, and report what it built as one JSON line.

usage: python trt_build_child.py MODEL.onnx OUT.engine tensorrt|tensorrt-rtx
"""
import json
import sys
from pathlib import Path

from sv3d_trt.kernels.trt_plugin import register_temporal_attention_plugin as register
from sv3d_trt.contract.tensorrt import ensure_parser_library, import_tensorrt

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

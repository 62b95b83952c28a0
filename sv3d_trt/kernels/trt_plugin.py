"""TensorRT plugin for the `sv3d_trt::TemporalAttention` ONNX node, for `tensorrt` and `tensorrt_rtx`.

An IPluginV3 (OneCore/OneBuild/OneRuntime) written in Python, with its IPluginCreatorV3One.
The ONNX parser maps a node whose op_type is `PLUGIN_NAME` to this plugin and passes the node's
`frames` attribute as a plugin field.

Build time (any machine, no GPU needed): the plugin learns dtype and head_dim in
`configure_plugin`, and `get_fields_to_serialize` AOT-compiles the Triton kernel to one cubin per
target arch (`aot.py`) and stores them packed in the engine. Run time: TensorRT recreates the
plugin from those fields, and `enqueue` launches the matching cubin on TensorRT's stream with
cuda-python (`launch.py`). Neither torch nor Triton is imported on that path, so the engine plus
this package is all a product needs; the running process must call
`register_temporal_attention_plugin(trt)` before deserializing, since an engine stores the
plugin's name, version and fields, not its code (tensorrt.md).

Works with the module returned by `contract.tensorrt.import_tensorrt`; never imports TensorRT itself.
"""
from __future__ import annotations

import logging
from types import ModuleType
from typing import Sequence

import numpy as np

from ..errors import BackendUnavailableError
from . import aot
from .launch import CubinFunction, function_for_device, launch_temporal_attention

log = logging.getLogger(__name__)

PLUGIN_NAME = "TemporalAttention"  # = the ONNX op_type (onnx_op.OP_TYPE)
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = ""

# Archs whose cubins an engine carries when the builder names none. TensorRT-RTX runs on
# Ampere/Ada/Blackwell only (no SM90, tensorrt.md); full TensorRT also serves Hopper and B200.
DEFAULT_ARCHS = {"tensorrt-rtx": (80, 86, 89, 120), "tensorrt": (80, 86, 89, 90, 100, 120)}

# (arch, dtype, frames, head_dim) -> CompiledKernel: every node of a UNet level shares one compile.
_compiled: dict[tuple[int, str, int, int], aot.CompiledKernel] = {}
# trt module name -> (plugin class, creator class), and the creator now in its registry
_classes: dict[str, tuple[type, type]] = {}
_registered: dict[str, object] = {}


def _compile(archs: Sequence[int], dtype: str, frames: int, head_dim: int) -> list[aot.CompiledKernel]:
    out = []
    for arch in archs:
        key = (arch, dtype, frames, head_dim)
        if key not in _compiled:
            log.info("compiling temporal attention for sm_%d %s frames=%d head_dim=%d", *key)
            _compiled[key] = aot.compile_temporal_attention(arch, dtype, frames, head_dim)
        out.append(_compiled[key])
    return out


def _field_values(fc) -> dict[str, np.ndarray]:
    return {f.name: np.asarray(f.data) for f in fc} if fc is not None else {}


def _make_classes(trt: ModuleType) -> tuple[type, type]:
    dtypes = {trt.DataType.HALF: "fp16", trt.DataType.BF16: "bf16", trt.DataType.FLOAT: "fp32"}

    class TemporalAttentionPlugin(trt.IPluginV3, trt.IPluginV3OneCore, trt.IPluginV3OneBuild, trt.IPluginV3OneRuntime):
        def __init__(self, frames: int, archs: tuple[int, ...], kernels: list[aot.CompiledKernel]):
            trt.IPluginV3.__init__(self)
            trt.IPluginV3OneCore.__init__(self)
            trt.IPluginV3OneBuild.__init__(self)
            trt.IPluginV3OneRuntime.__init__(self)
            self.plugin_name = PLUGIN_NAME
            self.plugin_version = PLUGIN_VERSION
            self.plugin_namespace = PLUGIN_NAMESPACE
            self.num_outputs = 1
            self.frames = frames
            self.archs = archs
            self.kernels = kernels  # filled at build time by get_fields_to_serialize
            self.io = None  # (dtype, head_dim) from configure_plugin
            self._functions: dict[tuple[str, int], CubinFunction] = {}

        # -- core --------------------------------------------------------------------------
        def get_capability_interface(self, type):
            return self

        def clone(self):
            cloned = TemporalAttentionPlugin(self.frames, self.archs, self.kernels)
            cloned.io = self.io
            return cloned

        # -- build -------------------------------------------------------------------------
        def get_output_data_types(self, input_types):
            return [input_types[0]]

        def get_output_shapes(self, inputs, shape_inputs, expr_builder):
            return [trt.DimsExprs(inputs[0])]  # o has q's shape (B*T, H*W, heads, d)

        def supports_format_combination(self, pos, in_out, num_inputs):
            desc = in_out[pos].desc
            if desc.format != trt.TensorFormat.LINEAR:
                return False
            if pos == 0:
                return desc.type in dtypes
            return desc.type == in_out[0].desc.type  # k, v, o share q's dtype

        def configure_plugin(self, inp, out):
            dims = inp[0].desc.dims
            if len(dims) != 4:
                raise ValueError(f"TemporalAttention takes (B*T, H*W, heads, head_dim) inputs, got rank {len(dims)}")
            self.io = (dtypes[inp[0].desc.type], int(dims[3]))

        def get_workspace_size(self, inp, out):
            return 0

        def get_valid_tactics(self):
            return [1]

        # -- runtime -----------------------------------------------------------------------
        def get_fields_to_serialize(self):
            if self.io is not None and not self.kernels:
                self.kernels = _compile(self.archs, self.io[0], self.frames, self.io[1])
            # A PluginField points into its array without owning it: keep both arrays alive on
            # the plugin until TensorRT has copied them (else the engine gets freed memory).
            self._field_arrays = (
                np.array([self.frames], dtype=np.int32),
                np.frombuffer(aot.pack(self.kernels), dtype=np.int8),
            )
            frames, kernels = self._field_arrays
            return trt.PluginFieldCollection([
                trt.PluginField("frames", frames, trt.PluginFieldType.INT32),
                trt.PluginField("kernels", kernels, trt.PluginFieldType.INT8),
            ])

        def on_shape_change(self, inp, out):
            pass

        def set_tactic(self, tactic):
            pass

        def attach_to_context(self, context):
            return self.clone()

        def enqueue(self, input_desc, output_desc, inputs, outputs, workspace, stream):
            dtype = dtypes[input_desc[0].type]
            shape = tuple(int(x) for x in input_desc[0].dims)  # (B*T, H*W, heads, d), contiguous
            key = (dtype, shape[3])
            if key not in self._functions:
                self._functions[key] = function_for_device(self.kernels, dtype, shape[3])
            launch_temporal_attention(self._functions[key], inputs[0], inputs[1], inputs[2], outputs[0], shape, stream)

    class TemporalAttentionCreator(trt.IPluginCreatorV3One):
        def __init__(self, archs: tuple[int, ...]):
            trt.IPluginCreatorV3One.__init__(self)
            self.name = PLUGIN_NAME
            self.plugin_version = PLUGIN_VERSION
            self.plugin_namespace = PLUGIN_NAMESPACE
            self.archs = archs
            # Node attributes the parser looks for; "kernels" comes only from serialized engines.
            self._frames_field = np.array([], dtype=np.int32)  # owned here, see get_fields_to_serialize
            self.field_names = trt.PluginFieldCollection([
                trt.PluginField("frames", self._frames_field, trt.PluginFieldType.INT32),
            ])

        def create_plugin(self, name, fc, phase):
            fields = _field_values(fc)
            if "frames" not in fields:
                raise ValueError(f"{PLUGIN_NAME} node {name!r} lacks the 'frames' attribute")
            frames = int(fields["frames"].ravel()[0])
            blob = fields.get("kernels")
            kernels = aot.unpack(blob.tobytes()) if blob is not None and blob.size else []
            return TemporalAttentionPlugin(frames, self.archs, kernels)

    return TemporalAttentionPlugin, TemporalAttentionCreator


def register_temporal_attention_plugin(trt: ModuleType, archs: Sequence[int] | None = None):
    """Register the plugin creator in `trt`'s plugin registry; returns the creator.

    archs: compute capabilities (e.g. (89, 120)) to carry cubins for in engines built from now
    on; default `DEFAULT_ARCHS` of the backend. Re-registering replaces the archs.
    """
    name = trt.__name__.split(".")[0]
    backend = "tensorrt-rtx" if name == "tensorrt_rtx" else "tensorrt"
    if name not in _classes:
        _classes[name] = _make_classes(trt)
    creator = _classes[name][1](tuple(archs) if archs else DEFAULT_ARCHS[backend])
    registry = trt.get_plugin_registry()
    old = registry.get_creator(PLUGIN_NAME, PLUGIN_VERSION, PLUGIN_NAMESPACE)
    if old is not None:
        registry.deregister_creator(old)
    if not registry.register_creator(creator, PLUGIN_NAMESPACE):
        raise BackendUnavailableError(f"{name} refused to register the {PLUGIN_NAME} plugin creator")
    # The registry holds a raw pointer: keep the Python object alive with the module state.
    _registered[name] = creator
    return creator

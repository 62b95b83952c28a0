"""`sv3d-trt export`: checkpoint -> five fixed-shape ONNX graphs + export.json (+ calibration set).

Exporter: torch.onnx's default torch.export-based (dynamo) path at opset 20. It traces with
fake tensors, so a full-size fp16 UNet exports without running a single fp16 convolution on
the CPU. Its built-in optimizer (`optimize=True`) is replaced by `_optimize`: the same
onnxscript constant folding and onnx_ir clean-up passes minus onnxscript's pattern
rewriter, which took 75% of the export time (235 of 325 s for the tiny step graph, measured
with cProfile) and changed nothing onnxslim does not also do (identical op counts after
onnxslim). Constant folding is what turns the raw export's sequence ops (which the TensorRT
parser rejects, tensorrt.md) into Split.

Precision is decided here and baked into the graphs (strongly typed: TensorRT and
TensorRT-RTX build exactly the dtypes they read): fp32, fp16 or bf16 weights and
activations, with the fp32 islands that graphs.py lists (EDM scalings and sinusoid, CFG and
Euler update, GroupNorm statistics, CLIP preprocessing). Inputs and outputs are fp32 always.

Per graph: build the wrapper (graphs.py) -> torch.onnx.export -> `_optimize` -> onnxslim
(constant folding, pattern fusions, dead-node removal, shape inference; graphs under 1.8 GB,
see SLIM_MAX_BYTES) -> save into a scratch folder -> onnx checker with full shape inference
on the saved file (the path form works past protobuf's 2 GB limit) -> check the IO against
the declared contract -> move into place, the weight file first and the .onnx last, so an
interrupted export never leaves a graph pointing at missing weights. Graphs with over 1 GB of
weights store them in `<graph>.onnx.data` beside the graph.

Components are loaded one at a time (and the UNet once for context + denoise_step) so the
peak memory is one network plus its ONNX copy.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable

import torch

from .. import __version__
from ..errors import CheckpointError
from ..contract.graphs import GRAPH_NAMES, GraphIO
from ..contract.manifest import EXPORT_INFO, sha256_file, source_entry, write_export_info
from ..models.checkpoint import inspect_checkpoint, load_checkpoint
from ..models.fold import attn2_names, fold_flops_removed
from .graphs import build_graph, graph_io, sample_inputs

log = logging.getLogger(__name__)

OPSET = 20
EXPORT_PRECISIONS = ("fp32", "fp16", "bf16")
DEFAULT_DECODE_CHUNK = 7  # divides the 21 frames: three decoder calls, no padded chunk
# Weights above 1 GB (half protobuf's 2 GB limit, leaving room for the graph and folded
# constants) go to `<graph>.onnx.data`; tensors under 64 KB (biases, shapes) stay inline.
EXTERNAL_DATA_BYTES = 2**30
EXTERNAL_MIN_BYTES = 2**16
# onnxslim needs the whole model as one in-memory ModelProto (it asks its ByteSize, which
# protobuf refuses past 2 GB, and its fusions read weight values): larger graphs (the
# full-size UNet) get onnxscript's constant folding and onnx's shape inference only.
SLIM_MAX_BYTES = 1800 * 2**20
# Which loaded component each graph needs.
GRAPH_COMPONENT = {"clip": "clip", "vae_encoder": "vae_encoder", "vae_decoder": "vae_decoder",
                   "context": "unet", "denoise_step": "unet"}
PLUGIN_GRAPHS = ("denoise_step",)  # the only graph holding temporal self-attention


def _graph_inputs_outputs(model) -> tuple[list[dict], list[dict]]:
    """IO of a saved ONNX graph as contract entries (name, shape, dtype)."""
    from onnx.helper import tensor_dtype_to_np_dtype

    weights = {t.name for t in model.graph.initializer}

    def entry(v) -> dict:
        t = v.type.tensor_type
        return {"name": v.name, "shape": [d.dim_value for d in t.shape.dim],
                "dtype": str(tensor_dtype_to_np_dtype(t.elem_type))}

    return ([entry(v) for v in model.graph.input if v.name not in weights], [entry(v) for v in model.graph.output])


def _check_contract(model, io: GraphIO) -> None:
    inputs, outputs = _graph_inputs_outputs(model)
    expected = io.to_json()
    if inputs != expected["inputs"] or outputs != expected["outputs"]:
        raise RuntimeError(
            f"{io.name}.onnx does not match its declared contract: got inputs {inputs} outputs {outputs}, "
            f"expected {expected}"
        )


def _optimize(model) -> None:
    """onnxscript's `optimize_ir` pass list without its pattern rewriter (module docstring), in place."""
    import onnx_ir as ir
    import onnx_ir.passes.common as common
    from onnxscript.optimizer import _constant_folding as folding

    ir.passes.Sequential(
        common.InlinePass(),
        ir.passes.PassManager(
            [folding.FoldConstantsPass(shape_inference=True, input_size_limit=folding.DEFAULT_CONSTANT_FOLD_INPUT_SIZE_LIMIT,
                                       output_size_limit=folding.DEFAULT_CONSTANT_FOLD_OUTPUT_SIZE_LIMIT),
             common.RemoveUnusedNodesPass(), common.RemoveUnusedFunctionsPass(), common.RemoveUnusedOpsetsPass()],
            steps=2, early_stop=True,
        ),
        common.RemoveUnusedNodesPass(),
        common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
        common.DeduplicateInitializersPass(),
        common.CommonSubexpressionEliminationPass(),
        common.OutputFixPass(),
        common.NameFixPass(),
    )(model)


def _plugin_export_kwargs(enabled: bool):
    """The temporal-attention plugin hook of kernels/onnx_op.py, or nothing."""
    if not enabled:
        return contextlib.nullcontext({})
    from ..kernels.onnx_op import emit_plugin_nodes

    return emit_plugin_nodes(dynamo=True)


def _move_into_place(scratch: Path, out_dir: Path, name: str) -> list[str]:
    """Move `<name>.onnx` and its weight files from scratch to out_dir; the graph file last."""
    graph = scratch / f"{name}.onnx"
    others = sorted(p for p in scratch.iterdir() if p != graph)
    for p in [*others, graph]:
        with open(p, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(p, out_dir / p.name)
    return [p.name for p in others]


def export_graph(module: torch.nn.Module, io: GraphIO, out_dir: str | os.PathLike, plugins: bool = False) -> dict:
    """Export one graph wrapper to `out_dir/<io.name>.onnx`. Returns its export.json entry."""
    import onnx
    import onnx_ir as ir
    import onnxslim

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    weight_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    with torch.no_grad(), _plugin_export_kwargs(plugins) as kwargs:
        program = torch.onnx.export(
            module, sample_inputs(io), dynamo=True, input_names=io.input_names, output_names=io.output_names,
            opset_version=OPSET, verbose=False, optimize=False, **kwargs,
        )
    _optimize(program.model)
    external = weight_bytes > EXTERNAL_DATA_BYTES
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=f".{io.name}.") as scratch:
        scratch = Path(scratch)
        path = scratch / f"{io.name}.onnx"
        data = f"{io.name}.onnx.data"
        if weight_bytes < SLIM_MAX_BYTES:
            model = onnxslim.slim(ir.serde.serialize_model(program.model))  # + shape inference
            del program
            onnx.save_model(model, str(path), save_as_external_data=external, all_tensors_to_one_file=True,
                            location=data, size_threshold=EXTERNAL_MIN_BYTES)
            del model
        else:
            # Stream the weights from the torch tensors into the data file; shape-infer on disk.
            ir.save(program.model, path, external_data=data, size_threshold_bytes=EXTERNAL_MIN_BYTES)
            del program
            onnx.shape_inference.infer_shapes_path(str(path), str(path))
        onnx.checker.check_model(str(path), full_check=True)  # + strict shape inference
        saved = onnx.load(str(path), load_external_data=False)
        _check_contract(saved, io)
        plugin_nodes = sum(n.op_type == "TemporalAttention" for n in saved.graph.node)
        if plugins and plugin_nodes == 0:
            raise RuntimeError(f"--plugins was requested but {io.name}.onnx holds no TemporalAttention node: "
                               "the UNet does not route temporal attention through sv3d_trt.kernels")
        entry = {
            "file": f"{io.name}.onnx",
            "nodes": len(saved.graph.node),
            "plugin_nodes": plugin_nodes,
            **io.to_json(),
        }
        del saved
        entry["external_data"] = _move_into_place(scratch, out_dir, io.name)
    entry["source"] = source_entry(out_dir / entry["file"])  # the hashes `run --onnx` re-checks
    entry["weight_bytes"] = weight_bytes
    entry["export_seconds"] = round(time.perf_counter() - t0, 2)
    return entry


def export_checkpoint(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    precision: str = "fp16",
    plugins: bool = False,
    decode_chunk: int = DEFAULT_DECODE_CHUNK,
    graphs: Iterable[str] = GRAPH_NAMES,
    calibrate: Callable[[Path], dict] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """Export every graph of a checkpoint into `out_dir` and write export.json. Returns its content.

    calibrate: None (no calibration set) or a recorder called with `out_dir` after the graphs,
    returning its export.json entry: runtime/calibration.py's `record_calibration` bound to the
    checkpoint and its options (the exporter never imports the runtime that runs it).
    progress: progress(stage, done, total), the mesh pipeline's form: ("load unet", 0, 1) before a
    network loads, ("export clip.onnx", 0, 1) before a graph's export and (..., 1, 1) once it is
    written. The calibration recorder reports its own steps.
    """
    if precision not in EXPORT_PRECISIONS:
        raise ValueError(f"export precision must be one of {EXPORT_PRECISIONS}, got {precision!r}")
    graphs = list(graphs)
    unknown = [g for g in graphs if g not in GRAPH_NAMES]
    if unknown:
        raise ValueError(f"unknown graphs {unknown}; expected a subset of {GRAPH_NAMES}")
    out_dir = Path(out_dir)
    config = inspect_checkpoint(checkpoint)  # validates the file before any heavy work
    if not 1 <= decode_chunk <= config.num_frames:
        raise CheckpointError(f"decode chunk must be in 1..{config.num_frames}, got {decode_chunk}")
    contracts = graph_io(config, decode_chunk)
    # export.json is written last: removing an earlier one first means a failed re-export
    # can never pass for a complete one.
    (out_dir / EXPORT_INFO).unlink(missing_ok=True)
    t0 = time.perf_counter()
    info = {
        "format": 1,
        "sv3d_trt_version": __version__,
        "config": config.name,
        "variant": config.variant,
        "precision": precision,
        "checkpoint": str(Path(checkpoint).resolve()),
        "checkpoint_sha256": sha256_file(Path(checkpoint)),
        "exporter": f"torch.onnx dynamo, torch {torch.__version__}",
        "opset": OPSET,
        "plugins": plugins,
        "decode_chunk": decode_chunk,
        "num_frames": config.num_frames,
        "image_size": config.image_size,
        "latent_size": config.latent_size,
        "vae_scale_factor": config.vae.scale_factor,
        "graphs": {},
    }
    report = progress or (lambda stage, done, total: None)
    # Load each network once, export the graphs that use it, free it.
    for component in dict.fromkeys(GRAPH_COMPONENT[g] for g in graphs):
        report(f"load {component}", 0, 1)
        models = load_checkpoint(checkpoint, dtype=precision, components=(component,))
        for name in (g for g in graphs if GRAPH_COMPONENT[g] == component):
            report(f"export {name}.onnx", 0, 1)
            module = build_graph(name, models)
            info["graphs"][name] = export_graph(module, contracts[name], out_dir, plugins=plugins and name in PLUGIN_GRAPHS)
            del module
            log.info("exported %s.onnx in %.1fs", name, info["graphs"][name]["export_seconds"])
            report(f"export {name}.onnx", 1, 1)
        if component == "unet":
            info["attn2_modules"] = dict(zip(contracts["context"].output_names, attn2_names(models.unet)))
        del models
    flops = fold_flops_removed(config)
    info["cross_attention_fold"] = {
        "flops_removed_per_step": flops["per_step"],
        "flops_added_once_per_generation": flops["added_once_per_generation"],
        "by_op": flops["by_op"],
    }
    info["export_seconds"] = round(time.perf_counter() - t0, 2)
    if calibrate is not None:
        info["calibration"] = calibrate(out_dir)
    write_export_info(out_dir, info)
    return info


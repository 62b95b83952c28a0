"""Explicit INT8 (W8A8, symmetric) and FP8 (e4m3) quantization of the denoise step graph.

Strongly typed TensorRT takes no INT8/FP8 flags: low precision exists only where the ONNX has
QuantizeLinear/DequantizeLinear pairs. NVIDIA ModelOpt's ONNX PTQ inserts them, calibrated on
the CPU through onnxruntime; its graphs build unchanged on TensorRT-RTX for int8 (every
target) and fp8 (sm89/sm120/sm121) (tensorrt.md). Weights get per-channel scales, activations
one per-tensor scale (symmetric, no zero points: the only Q/DQ form TensorRT-RTX builds).
Everything outside a Q/DQ pair runs in fp16 (bf16 for a bf16 export): ModelOpt's AutoCast
lowers the whole graph to one high-precision dtype, so fp32 islands of an fp32/fp16 export do
not survive quantization; the per-step error report below measures the total effect.

Calibration set: `<export dir>/calibration/denoise_step.npz` (format: contract/calibration.py),
real feeds of the step graph recorded during seeded generations.
Recording all 50 steps of several generations covers the sigma range the engine will see.
The last generation is held out from calibration and used for the error report.

Which layers stay high precision (`excluded_nodes`, decided from the graph's structure and
shapes, so it holds for any exporter's node names):
  * Norms (GroupNorm/LayerNorm), Softmax, SiLU/GELU, residual adds, the EDM scalings, the
    per-frame CFG combination and the Euler update: only Conv/MatMul/Gemm are quantized.
    These are memory-bound (nothing to gain from int8 math) and range-sensitive (variances,
    exponentials, x_t at sigma up to 700).
  * The first GEMM layers (no Conv/MatMul/Gemm upstream): the input conv sees the c_in-scaled
    latent next to the concat latent, and the time/camera embeddings see sinusoids. One
    activation scale must fit all 50 noise levels there, and K is tiny (8 channels x 3x3).
  * The last GEMM layer (none downstream): the output conv produces the denoiser output that
    the EDM/CFG/Euler arithmetic scales by sigma, so its error lands unfiltered in x_{t+1}.
  * GEMMs over fewer than 64 rows: the conditioning MLPs (time, camera, per-ResBlock emb
    projections) run once per frame: no measurable time to win, and their outputs modulate
    every ResBlock.
  * INT8 only: attention score/value matmuls (both operands activations). Softmax
    probabilities span many decades; one per-tensor int8 scale rounds the small ones to zero.
    FP8's exponent keeps them, and TensorRT fuses FP8 attention on sm89/sm120, so FP8 keeps
    them quantized.
"""
from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from ..contract.calibration import CALIBRATION_PATH, GENERATION_KEY, STEP_KEY
from ..contract.manifest import Precision, external_data_files
from ..errors import StaleEngineError

log = logging.getLogger(__name__)

GEMM_OPS = ("Conv", "MatMul", "Gemm")
MIN_ROWS = 64
QDQ_OPSET = 21  # opset 21 lets float8 flow through Transpose, so onnxruntime can run the fp8 graph
_CALIBRATION_METHOD = {Precision.INT8: "entropy", Precision.FP8: "max"}


# ---- calibration set ---------------------------------------------------------------------


@dataclass
class CalibrationSet:
    feeds: dict[str, np.ndarray]  # input name -> (N, *input shape)
    generation: np.ndarray  # (N,) int64
    step: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.step)

    def sample(self, i: int, dtypes: Mapping[str, np.dtype] | None = None) -> dict[str, np.ndarray]:
        """Feed i, cast to `dtypes` (input name -> dtype) when given."""
        return {k: (v[i].astype(dtypes[k]) if dtypes else v[i]) for k, v in self.feeds.items()}

    def subset(self, index: np.ndarray) -> "CalibrationSet":
        return CalibrationSet({k: v[index] for k, v in self.feeds.items()}, self.generation[index], self.step[index])

    def split(self) -> tuple["CalibrationSet", "CalibrationSet"]:
        """(calibration, held out): the last generation is held out when there are several."""
        generations = np.unique(self.generation)
        if len(generations) < 2:
            raise StaleEngineError(
                "the calibration set holds one generation; record at least two so one can be held "
                "out for the error check (`sv3d-trt export` records several by default)"
            )
        held = self.generation == generations[-1]
        return self.subset(np.flatnonzero(~held)), self.subset(np.flatnonzero(held))


def graph_inputs(onnx_path: str | os.PathLike) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Input name -> (shape, numpy dtype) of an ONNX graph (weights not loaded)."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    model = onnx.load(str(onnx_path), load_external_data=False)
    weights = {t.name for t in model.graph.initializer}
    return {
        i.name: (
            tuple(d.dim_value for d in i.type.tensor_type.shape.dim),
            np.dtype(tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)),
        )
        for i in model.graph.input
        if i.name not in weights
    }


def calibration_command(onnx_dir: str | os.PathLike, export_info: Mapping) -> str:
    """The command that records an export's calibration set: the same export with --calibrate
    (a full-size checkpoint's 50-step generations want a GPU)."""
    options = [f"--checkpoint {shlex.quote(str(export_info.get('checkpoint', 'CHECKPOINT')))}",
               f"--out {shlex.quote(str(onnx_dir))}", f"--precision {export_info.get('precision', 'fp16')}"]
    if "decode_chunk" in export_info:
        options.append(f"--decode-chunk {export_info['decode_chunk']}")
    options.append("--calibrate" + (" --device cuda" if export_info.get("config") == "full" else ""))
    return "sv3d-trt export " + " ".join(options)


def require_calibration(onnx_dir: str | os.PathLike, export_info: Mapping, precision: Precision) -> None:
    """Before any engine is built: an int8/fp8 build without a calibration set says how to make one."""
    if not (Path(onnx_dir) / CALIBRATION_PATH).is_file():
        raise StaleEngineError(
            f"an {precision.value} build calibrates the denoise step on recorded denoising steps, and "
            f"{onnx_dir} has no {CALIBRATION_PATH.as_posix()} (`sv3d-trt export` records it only with "
            "--calibrate: 2 images x 2 seeds x 50 steps). Record it with:\n  "
            + calibration_command(onnx_dir, export_info)
        )


def load_calibration(path: str | os.PathLike, onnx_path: str | os.PathLike) -> CalibrationSet:
    """Read and check a calibration set against the graph it calibrates: every input present
    with the right per-sample shape and kind of dtype, the same N everywhere, finite values."""
    path = Path(path)
    if not path.is_file():
        raise StaleEngineError(
            f"{path} not found: int8/fp8 builds calibrate on recorded denoising steps; "
            "record them with `sv3d-trt export ... --calibrate`"
        )
    inputs = graph_inputs(onnx_path)
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    problems = []
    for key in (GENERATION_KEY, STEP_KEY):
        if key not in arrays:
            problems.append(f"missing {key}")
    n = len(arrays.get(STEP_KEY, ()))
    for name, (shape, dtype) in inputs.items():
        a = arrays.get(name)
        if a is None:
            problems.append(f"missing input {name!r}")
        elif a.shape != (n, *shape):
            problems.append(f"{name!r} has shape {a.shape}, expected {(n, *shape)}")
        elif np.issubdtype(dtype, np.floating) != np.issubdtype(a.dtype, np.floating):
            problems.append(f"{name!r} is {a.dtype}, the graph takes {dtype}")
        elif np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            problems.append(f"{name!r} has non-finite values")
    extra = set(arrays) - set(inputs) - {GENERATION_KEY, STEP_KEY}
    if extra:
        problems.append(f"arrays {sorted(extra)} are not inputs of {Path(onnx_path).name}")
    if n == 0:
        problems.append("no samples")
    if problems:
        raise StaleEngineError(f"{path} does not fit {onnx_path}: " + "; ".join(problems)
                               + "; re-record it with `sv3d-trt export ... --calibrate`")
    return CalibrationSet({k: arrays[k] for k in inputs}, arrays[GENERATION_KEY], arrays[STEP_KEY])


# ---- which layers stay in high precision --------------------------------------------------


def excluded_nodes(model, precision: Precision) -> dict[str, str]:
    """Node name -> why it stays high precision (module docstring). `model` is an onnx
    ModelProto, ideally shape-inferred (the row rule needs activation shapes)."""
    graph = model.graph
    constants = {t.name for t in graph.initializer}
    constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    shapes = {
        v.name: [d.dim_value if d.HasField("dim_value") else 0 for d in v.type.tensor_type.shape.dim]
        for v in list(graph.value_info) + list(graph.input) + list(graph.output)
    }

    def activations(node):
        return [i for i in node.input if i and i not in constants]

    # Nodes are topologically sorted: one forward pass marks tensors with a GEMM upstream,
    # one backward pass tensors with a GEMM downstream.
    after_gemm: set[str] = set()
    for node in graph.node:
        if node.op_type in GEMM_OPS or any(i in after_gemm for i in node.input):
            after_gemm.update(node.output)
    before_gemm: set[str] = set()
    for node in reversed(graph.node):
        if node.op_type in GEMM_OPS or any(o in before_gemm for o in node.output):
            before_gemm.update(i for i in node.input if i)

    reasons = {}
    for node in graph.node:
        if node.op_type not in GEMM_OPS:
            continue
        acts = activations(node)
        if not acts:
            continue
        if len(acts) >= 2 and node.op_type == "MatMul":
            if precision == Precision.INT8:
                reasons[node.name] = "attention matmul: int8 per-tensor scale zeroes small softmax probabilities"
            continue
        if not any(a in after_gemm for a in acts):
            reasons[node.name] = "first layer: one activation scale cannot fit the input range of all 50 noise levels"
        elif not any(o in before_gemm for o in node.output):
            reasons[node.name] = "last layer: its error reaches x_{t+1} scaled by sigma, unfiltered"
        elif node.op_type != "Conv" and acts[0] in shapes and 0 < int(np.prod(shapes[acts[0]][:-1])) < MIN_ROWS:
            reasons[node.name] = f"conditioning GEMM over < {MIN_ROWS} rows: negligible time, modulates every block"
    return reasons


# ---- quantize -----------------------------------------------------------------------------


def _calibration_reader(calibration: CalibrationSet, dtypes: Mapping[str, np.dtype]):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        """Feeds samples one by one (ModelOpt's own provider splits along axis 0 of each input,
        which breaks for scalar or frame-batched inputs)."""

        def __init__(self):
            self.index = 0

        def get_next(self):
            if self.index >= len(calibration):
                return None
            self.index += 1
            return calibration.sample(self.index - 1, dtypes)

        def get_first(self):
            return calibration.sample(0, dtypes)

        def rewind(self):
            self.index = 0

    return Reader()


def _calibration_providers() -> list[str]:
    import onnxruntime as ort

    return (["cuda:0"] if "CUDAExecutionProvider" in ort.get_available_providers() else []) + ["cpu"]


def quantize_graph(
    source: str | os.PathLike, dest: str | os.PathLike, precision: Precision, calibration: CalibrationSet,
) -> dict[str, str]:
    """Write `dest`: `source` with int8/fp8 Q/DQ, calibrated on `calibration`. Returns the
    excluded nodes with their reasons. `source` and its external weights are not touched:
    ModelOpt works on a copy in a scratch folder beside `dest`."""
    import onnx
    from modelopt.onnx.quantization import quantize


    precision = Precision(precision)
    if not precision.quantized:
        raise ValueError(f"{precision.value} is not a quantized precision")
    source, dest = Path(source), Path(dest)
    dtypes = {name: dtype for name, (_, dtype) in graph_inputs(source).items()}
    external = external_data_files(source)
    model = onnx.shape_inference.infer_shapes(onnx.load(str(source), load_external_data=False))
    excluded = excluded_nodes(model, precision)
    high_precision = "bf16" if any(d.name == "bfloat16" for d in dtypes.values()) else "fp16"
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".quantize.") as scratch:
        scratch = Path(scratch)
        # ModelOpt rewrites its input in place (shape inference): give it a copy of the graph;
        # the external weights are only read, so links do.
        shutil.copyfile(source, scratch / source.name)
        for name in external:
            (scratch / name).symlink_to((source.parent / name).resolve())
        out = scratch / "out" / dest.name
        out.parent.mkdir()
        quantize(
            str(scratch / source.name),
            quantize_mode=precision.value,
            calibration_data_reader=_calibration_reader(calibration, dtypes),
            calibration_method=_CALIBRATION_METHOD[precision],
            calibration_eps=_calibration_providers(),
            op_types_to_quantize=list(GEMM_OPS),
            nodes_to_exclude=[f"{re.escape(n)}$" for n in excluded],
            high_precision_dtype=high_precision,
            use_external_data_format=bool(external),
            opset=QDQ_OPSET,
            output_path=str(out),
            log_level="WARNING",
        )
        # The quantized graph and its weight file move together, each by an atomic rename.
        for produced in sorted(out.parent.iterdir(), key=lambda p: p == out):
            os.replace(produced, dest.parent / produced.name)
    return excluded


# ---- error report -------------------------------------------------------------------------


STATE_INPUTS = ("x_t", "x")  # the step graph's latent input, if it is named one of these


def step_errors(reference: str | os.PathLike, quantized: str | os.PathLike, samples: CalibrationSet) -> list[dict]:
    """Relative L2 error ||q - ref|| / ||ref|| of the quantized step graph's outputs against the
    reference graph, through onnxruntime (CPU), one entry per sample. When the graph's latent
    input (`STATE_INPUTS`) has the output's shape, also the error of the step's update
    x_{t+1} - x_t: late steps change x_t little, so the output error alone hides a bad denoiser.

    Basic graph optimizations only: onnxruntime then executes each Q/DQ pair as written (the
    arithmetic TensorRT's int8/fp8 kernels reproduce), and its extended QDQ fusions, which
    reject ModelOpt's opset-21 Gemm Q/DQ (onnxruntime 1.32), stay out of the way."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    sessions = [ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for p in (reference, quantized)]
    dtypes = [{name: dtype for name, (_, dtype) in graph_inputs(p).items()} for p in (reference, quantized)]
    state = next((n for n in STATE_INPUTS if n in samples.feeds), None)
    report = []
    for i in range(len(samples)):
        ref, q = (
            np.concatenate([o.astype(np.float64).ravel() for o in s.run(None, samples.sample(i, d))])
            for s, d in zip(sessions, dtypes, strict=True)
        )
        entry = {
            "generation": int(samples.generation[i]),
            "step": int(samples.step[i]),
            "rel_error": float(np.linalg.norm(q - ref) / np.linalg.norm(ref)),
        }
        if state is not None and samples.feeds[state][i].size == ref.size:
            update = ref - samples.feeds[state][i].astype(np.float64).ravel()
            entry["rel_error_update"] = float(np.linalg.norm(q - ref) / np.linalg.norm(update))
        report.append(entry)
    return report


def quantize_step_graph(
    source: str | os.PathLike, dest: str | os.PathLike, precision: Precision, error_samples: int = 4,
) -> dict:
    """Quantize an export's denoise step from its calibration set (the export directory is
    `source`'s folder) and check it on held-out steps. Returns the report for the manifest."""
    source = Path(source)
    calibration = load_calibration(source.parent / CALIBRATION_PATH, source)
    calib, held_out = calibration.split()
    excluded = quantize_graph(source, dest, precision, calib)
    report = {
        "mode": Precision(precision).value,
        "method": _CALIBRATION_METHOD[Precision(precision)],
        "calibration_samples": len(calib),
        "held_out_generation": int(held_out.generation[0]),
        "excluded_nodes": excluded,
    }
    if error_samples > 0:
        pick = np.unique(np.linspace(0, len(held_out) - 1, min(error_samples, len(held_out))).round().astype(int))
        errors = step_errors(source, dest, held_out.subset(pick))
        report["step_errors"] = errors
        log.info("%s step graph vs export: max rel. error %.3g over %d held-out steps",
                 report["mode"], max(e["rel_error"] for e in errors), len(errors))
    return report

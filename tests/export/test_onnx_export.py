"""`sv3d-trt export` on the tiny config: every graph through onnxruntime (CPU) against its PyTorch
module, a whole 50-step generation driven by the ONNX graphs against the torch-eager sampler,
export.json, and the calibration set."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from sv3d_trt.contract.graphs import GRAPH_NAMES  # noqa: E402
from sv3d_trt.export.graphs import build_graph, graph_io, sample_inputs  # noqa: E402
from sv3d_trt.export.onnx_export import export_checkpoint  # noqa: E402
from sv3d_trt.models.checkpoint import load_checkpoint  # noqa: E402
from tests.conftest import rel_err  # noqa: E402

DECODE_CHUNK = 7


def _session(path) -> "ort.InferenceSession":
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run(path, names, inputs) -> list[np.ndarray]:
    return _session(path).run(None, {n: t.numpy() for n, t in zip(names, inputs)})


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/export/conftest.py


@pytest.fixture(scope="module")
def models(tiny_checkpoint):
    return load_checkpoint(tiny_checkpoint)


@pytest.fixture(scope="module")
def contracts(models):
    return graph_io(models.config, DECODE_CHUNK)


@pytest.fixture(scope="module")
def export_fp32(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("export_fp32")
    export_checkpoint(tiny_checkpoint, out, precision="fp32", decode_chunk=DECODE_CHUNK)
    return out


@pytest.fixture(scope="module")
def export_fp16(tiny_checkpoint, tmp_path_factory):
    """The fp16 export through the command line, as users run it: no calibration set unless
    --calibrate, paths printed once-slashed for an --out with a trailing slash."""
    from click.testing import CliRunner

    from sv3d_trt.cli import main

    out = tmp_path_factory.mktemp("export_fp16")
    result = CliRunner().invoke(main, ["export", "--checkpoint", str(tiny_checkpoint), "--out", f"{out}/",
                                       "--precision", "fp16", "--decode-chunk", str(DECODE_CHUNK)])
    assert result.exit_code == 0, result.output
    assert f"wrote {out / 'export.json'} " in result.output and "//" not in result.output
    assert not (out / "calibration").exists() and "calibration" not in json.loads((out / "export.json").read_text())
    return out


def _reference(models, contracts, name, seed):
    inputs = sample_inputs(contracts[name], seed)
    with torch.no_grad():
        out = build_graph(name, models)(*inputs)
    out = out if isinstance(out, tuple) else (out,)
    return inputs, [o.numpy() for o in out]


@pytest.mark.parametrize("name", GRAPH_NAMES)
def test_graph_fp32_matches_torch(export_fp32, models, contracts, name):
    inputs, ref = _reference(models, contracts, name, seed=11)
    out = _run(export_fp32 / f"{name}.onnx", contracts[name].input_names, inputs)
    assert len(out) == len(ref)
    for o, r in zip(out, ref):
        assert o.shape == r.shape and o.dtype == np.float32
        assert np.abs(r).mean() > 1e-2  # non-trivial
        assert rel_err(o, r) <= 1e-4


@pytest.mark.parametrize("name", GRAPH_NAMES)
def test_graph_fp16_matches_fp32_torch(export_fp16, models, contracts, name):
    inputs, ref = _reference(models, contracts, name, seed=12)
    out = _run(export_fp16 / f"{name}.onnx", contracts[name].input_names, inputs)
    for o, r in zip(out, ref):
        assert o.dtype == np.float32  # IO stays fp32 whatever the precision
        assert rel_err(o, r) <= 1e-2


def _float_initializer_dtypes(path) -> set[str]:
    from onnx.helper import tensor_dtype_to_np_dtype

    model = onnx.load(str(path))
    return {str(tensor_dtype_to_np_dtype(t.data_type)) for t in model.graph.initializer
            if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)
            and np.prod(t.dims) > 1}


def test_fp16_graphs_are_strongly_typed(export_fp16):
    """Weights are fp16; the fp32 islands hold no weight tensors (scalars/constants only)."""
    for name in GRAPH_NAMES:
        assert _float_initializer_dtypes(export_fp16 / f"{name}.onnx") <= {"float16", "float32"}
        assert "float16" in _float_initializer_dtypes(export_fp16 / f"{name}.onnx")
    step = onnx.load(str(export_fp16 / "denoise_step.onnx"))
    # GroupNorm statistics in fp32: every InstanceNormalization is fed by a Cast to float.
    producers = {o: n for n in step.graph.node for o in n.output}
    norms = [n for n in step.graph.node if n.op_type == "InstanceNormalization"]
    assert norms
    for n in norms:
        src = producers[n.input[0]]
        while src.op_type == "Reshape":
            src = producers[src.input[0]]
        assert src.op_type == "Cast" and onnx.helper.get_attribute_value(src.attribute[0]) == onnx.TensorProto.FLOAT


def test_bf16_context_graph(tiny_checkpoint, models, contracts, tmp_path):
    """bf16 graphs: onnxruntime's CPU provider has no bf16 Gemm, so the onnx reference evaluator runs it."""
    from onnx.reference import ReferenceEvaluator

    info = export_checkpoint(tiny_checkpoint, tmp_path, precision="bf16", graphs=["context"])
    assert info["precision"] == "bf16" and list(info["graphs"]) == ["context"]
    assert "bfloat16" in _float_initializer_dtypes(tmp_path / "context.onnx")
    inputs, ref = _reference(models, contracts, "context", seed=13)
    out = ReferenceEvaluator(str(tmp_path / "context.onnx")).run(None, {"clip_embedding": inputs[0].numpy()})
    for o, r in zip(out, ref):
        assert rel_err(o, r) <= 2e-2


def test_export_json(export_fp32, tiny_checkpoint, contracts):
    from sv3d_trt.contract.manifest import sha256_file

    info = json.loads((export_fp32 / "export.json").read_text())
    assert (info["config"], info["variant"], info["precision"]) == ("tiny", "sv3d_p", "fp32")
    assert info["checkpoint_sha256"] == sha256_file(tiny_checkpoint)
    assert info["decode_chunk"] == DECODE_CHUNK and info["plugins"] is False and info["opset"] == 20
    assert list(info["graphs"]) == list(GRAPH_NAMES)
    for name, entry in info["graphs"].items():
        assert entry["inputs"] == contracts[name].to_json()["inputs"]
        assert entry["outputs"] == contracts[name].to_json()["outputs"]
        assert entry["external_data"] == []  # tiny graphs are far below 2 GB
    assert len(info["attn2_modules"]) == 32
    assert info["cross_attention_fold"]["flops_removed_per_step"] > 0
    # No leftovers of the atomic writes.
    assert not [p for p in export_fp32.iterdir() if p.name.startswith(".")]


def test_context_outputs_feed_step_inputs_by_name(export_fp32):
    context = _session(export_fp32 / "context.onnx")
    step = _session(export_fp32 / "denoise_step.onnx")
    outputs = [o.name for o in context.get_outputs()]
    assert outputs == [i.name for i in step.get_inputs()][6:]


def test_50_step_generation_matches_torch_eager(export_fp32, models):
    """The whole sampler loop driven by context.onnx + denoise_step.onnx vs TorchEagerBackend.denoise."""
    from sv3d_trt.cameras import camera_vector, static_orbit
    from sv3d_trt.runtime.backend import Conditioning
    from sv3d_trt.runtime.torch_eager import TorchEagerBackend
    from sv3d_trt.sampler import edm_sigmas, initial_noise_scale, triangle_cfg_scales

    cfg = models.config
    T, h = cfg.num_frames, cfg.latent_size
    rng = np.random.default_rng(5)
    cond = Conditioning(
        clip_embedding=rng.standard_normal((1, cfg.unet.context_dim)).astype(np.float32),
        concat_latent=rng.standard_normal((1, 4, h, h)).astype(np.float32),
        input_rgb=np.zeros((cfg.image_size, cfg.image_size, 3), np.uint8),
    )
    vector = camera_vector(cfg.variant, static_orbit(T), num_frames=T)
    scales = triangle_cfg_scales(T).astype(np.float32)
    sigmas = edm_sigmas(50)
    x0 = rng.standard_normal((T, 4, h, h)).astype(np.float32) * np.float32(initial_noise_scale(float(sigmas[0])))

    backend = TorchEagerBackend(models)
    reference = backend.denoise(backend.prepare(cond, vector, scales), x0, sigmas)

    attn2 = dict(zip([o.name for o in _session(export_fp32 / "context.onnx").get_outputs()],
                     _session(export_fp32 / "context.onnx").run(None, {"clip_embedding": cond.clip_embedding})))
    step = _session(export_fp32 / "denoise_step.onnx")
    x = x0
    for i in range(len(sigmas) - 1):
        (x,) = step.run(None, {"x": x, "sigma": np.array([sigmas[i]], np.float32),
                               "sigma_next": np.array([sigmas[i + 1]], np.float32),
                               "concat_latent": cond.concat_latent, "vector": vector, "cfg_scales": scales, **attn2})
    assert np.abs(reference).mean() > 0.1
    assert rel_err(x, reference) <= 1e-3


def test_last_step_returns_the_denoised_value(export_fp32, models, contracts):
    """At sigma_next = 0 the graph returns D exactly (the Euler formula would differ by rounding)."""
    from sv3d_trt.runtime.backend import Conditioning
    from sv3d_trt.runtime.torch_eager import TorchEagerBackend
    from sv3d_trt.sampler import cfg_combine

    inputs = list(sample_inputs(contracts["denoise_step"], 14))
    inputs[1], inputs[2] = torch.tensor([0.002]), torch.tensor([0.0])
    names = contracts["denoise_step"].input_names
    backend = TorchEagerBackend(models)
    clip = torch.randn(1, models.config.unet.context_dim)
    inputs[6:] = build_graph("context", models)(clip)
    state = backend.prepare(Conditioning(clip.numpy(), inputs[3].numpy(), None), inputs[4].numpy(), inputs[5].numpy())
    with torch.no_grad():
        denoised = cfg_combine(*backend.denoised(state, inputs[0], 0.002), state.cfg_scales).numpy()
    (out,) = _run(export_fp32 / "denoise_step.onnx", names, [t.detach() for t in inputs])
    assert rel_err(out, denoised) <= 1e-5


def test_plugin_export_with_external_weights(models, contracts, tmp_path, monkeypatch):
    """--plugins on the full-size UNet's path (weights streamed to <graph>.onnx.data, no onnxslim),
    here forced on the tiny graph: each temporal self-attention is one sv3d_trt::TemporalAttention
    node, and the graph, evaluated with the node's reference op, still computes the step."""
    from onnx.reference import ReferenceEvaluator

    from sv3d_trt.export import onnx_export
    from sv3d_trt.kernels.onnx_op import DOMAIN, OP_TYPE, onnx_reference_op

    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 0)
    monkeypatch.setattr(onnx_export, "SLIM_MAX_BYTES", 0)
    entry = onnx_export.export_graph(build_graph("denoise_step", models), contracts["denoise_step"], tmp_path,
                                     plugins=True)
    assert entry["plugin_nodes"] == 16 and entry["external_data"] == ["denoise_step.onnx.data"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["denoise_step.onnx", "denoise_step.onnx.data"]
    model = onnx.load(str(tmp_path / "denoise_step.onnx"))
    nodes = [n for n in model.graph.node if n.op_type == OP_TYPE]
    assert len(nodes) == 16 and all(n.domain == DOMAIN for n in nodes)
    assert all(onnx.helper.get_attribute_value(n.attribute[0]) == models.config.num_frames for n in nodes)
    inputs, ref = _reference(models, contracts, "denoise_step", seed=15)
    names = contracts["denoise_step"].input_names
    (out,) = ReferenceEvaluator(model, new_ops=[onnx_reference_op()]).run(
        None, {n: t.numpy() for n, t in zip(names, inputs)})
    assert rel_err(out, ref[0]) <= 1e-4


def test_recorded_steps_budget():
    from sv3d_trt.runtime.calibration import recorded_steps

    assert recorded_steps(50, 4, sample_bytes=1000, max_bytes=10**9) == list(range(50))
    full = recorded_steps(50, 4, sample_bytes=2_000_000, max_bytes=256 * 2**20)
    assert full[0] == 0 and full[-1] == 49 and 2 <= len(full) < 50
    assert 4 * len(full) * 2_000_000 <= 256 * 2**20


def test_calibration_set(tiny_checkpoint, export_fp32, tmp_path):
    """Recorded feeds load with the quantizer's own checker, and are a real trajectory:
    feeding sample i to denoise_step.onnx gives sample i+1's x."""
    import shutil

    from sv3d_trt.runtime.calibration import record_calibration
    from sv3d_trt.contract.calibration import CALIBRATION_PATH
    from sv3d_trt.export.quantize import load_calibration
    from sv3d_trt.preprocess import example_image_path

    reports = []
    info = record_calibration(tiny_checkpoint, tmp_path, images=[example_image_path("toy")], seeds=[0, 1], steps=3,
                              progress=lambda *r: reports.append(r))
    assert info["samples"] == 6 and info["recorded_steps"] == [0, 1, 2]
    assert reports == [("calibrate: load the fp32 model", 0, 1)] + [
        (f"calibrate {g + 1}/2: toy_rgb.png, seed {g}", i, 3) for g in (0, 1) for i in (1, 2, 3)]
    assert [g["orbit"] for g in info["generations"]] == ["static", "dynamic"]
    shutil.copy(export_fp32 / "denoise_step.onnx", tmp_path / "denoise_step.onnx")
    calib = load_calibration(tmp_path / CALIBRATION_PATH, tmp_path / "denoise_step.onnx")
    assert list(calib.generation) == [0] * 3 + [1] * 3 and list(calib.step) == [0, 1, 2] * 2
    assert not np.allclose(calib.feeds["vector"][0], calib.feeds["vector"][3])  # static vs dynamic orbit
    step = _session(tmp_path / "denoise_step.onnx")
    for i in (0, 1, 3, 4):
        (x_next,) = step.run(None, calib.sample(i))
        assert rel_err(x_next, calib.feeds["x"][i + 1]) <= 1e-4
    assert calib.feeds["sigma_next"][2][0] == 0.0


@pytest.mark.slow
def test_full_size_export(tmp_path):
    """Item 6 of issue 3: full-size random checkpoint -> fp16 export (-> TensorRT-RTX build if installed).
    Minutes and ~10 GB of RAM; run by hand with SV3D_SLOW=1."""
    script = Path(__file__).resolve().parents[2] / "bench" / "full_size_export.sh"
    env = dict(os.environ, WORK=str(tmp_path))
    subprocess.run(["bash", str(script)], check=True, env=env)
    info = json.loads((tmp_path / "onnx" / "export.json").read_text())
    assert info["config"] == "full" and info["precision"] == "fp16"
    assert info["graphs"]["denoise_step"]["external_data"] == ["denoise_step.onnx.data"]


def test_calibration_images(tmp_path):
    from PIL import Image

    from sv3d_trt.errors import ImageError
    from sv3d_trt.runtime.calibration import calibration_images

    assert [p.name for p in calibration_images()] == ["mug_rgba.png", "toy_rgb.png"]
    with pytest.raises(ImageError, match="no image"):
        calibration_images(tmp_path)
    Image.new("RGB", (40, 40), (200, 10, 10)).save(tmp_path / "b.png")
    Image.new("RGB", (40, 40), (10, 200, 10)).save(tmp_path / "a.JPG")
    (tmp_path / "notes.txt").write_text("not an image")
    assert [p.name for p in calibration_images(tmp_path)] == ["a.JPG", "b.png"]

"""Small self-made export directories for the build / manifest / quantize tests.

Until the real exporter's tiny graphs are used here, these graphs imitate its pieces: a
denoise step with the UNet's layer kinds (input conv, GroupNorm+SiLU ResBlock with an
embedding projection, self-attention, folded cross-attention input, GELU MLP, output conv),
the uncond/cond batch, per-frame CFG and the Euler update inside; and a CLIP-like encoder.
Every weight is random (official inits zero output layers).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional

FRAMES, LATENT, CH, VEC, CTX = 3, 8, 32, 16, 32
GENERATIONS, STEPS = 3, 6


class TinyStep(nn.Module):
    """x_t, sigma, sigma_next, concat, vector, cfg_scale, attn_ctx -> x_next."""

    def __init__(self):
        super().__init__()
        self.conv_in = nn.Conv2d(8, CH, 3, padding=1)
        self.emb = nn.Sequential(nn.Linear(VEC + 1, 64), nn.SiLU(), nn.Linear(64, CH))
        self.norm1 = nn.GroupNorm(8, CH)
        self.conv1 = nn.Conv2d(CH, CH, 3, padding=1)
        self.norm2 = nn.GroupNorm(8, CH)
        self.to_q, self.to_k, self.to_v, self.to_out = (nn.Linear(CH, CH) for _ in range(4))
        self.ff1, self.ff2 = nn.Linear(CH, 4 * CH), nn.Linear(4 * CH, CH)
        self.norm_out = nn.GroupNorm(8, CH)
        self.conv_out = nn.Conv2d(CH, 4, 3, padding=1)

    def forward(self, x, sigma, sigma_next, concat, vector, cfg_scale, attn_ctx):
        # x, concat: (F, 4, H, W); sigma, sigma_next: (1,); vector: (F, VEC); cfg_scale: (F,)
        # attn_ctx: (2, F, 1, CH) folded cross-attention output, uncond then cond
        c_in = 1 / torch.sqrt(sigma**2 + 1)
        h = torch.cat([x * c_in, concat], 1).repeat(2, 1, 1, 1)  # (2F, 8, H, W)
        h = self.conv_in(h)
        emb = self.emb(torch.cat([vector, torch.log(sigma).expand(FRAMES, 1)], 1)).repeat(2, 1)  # (2F, CH)
        h = h + self.conv1(F.silu(self.norm1(h))) + emb[:, :, None, None]
        b, c, hh, ww = h.shape
        t = self.norm2(h).flatten(2).transpose(1, 2)  # (2F, H*W, CH)
        q, k, v = self.to_q(t), self.to_k(t), self.to_v(t)
        a = torch.softmax(q @ k.transpose(1, 2) / c**0.5, -1) @ v
        t = t + self.to_out(a) + attn_ctx.reshape(b, 1, c)
        t = t + self.ff2(F.gelu(self.ff1(t)))
        h = t.transpose(1, 2).reshape(b, c, hh, ww)
        eps = self.conv_out(F.silu(self.norm_out(h)))  # (2F, 4, H, W)
        uncond, cond = eps.chunk(2)
        eps = uncond + cfg_scale[:, None, None, None] * (cond - uncond)
        denoised = x - sigma * eps
        return x + (sigma_next - sigma) * (x - denoised) / sigma


class TinyClip(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, CH, 4, stride=4)
        self.ln = nn.LayerNorm(CH)
        self.proj = nn.Linear(CH, CTX)

    def forward(self, image):  # (1, 3, 16, 16) -> (1, CTX)
        t = self.ln(self.patch(image).flatten(2).transpose(1, 2))
        return self.proj(t.mean(1))


def _random_weights(module: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.data = torch.randn(p.shape, generator=g) * (0.5 / max(1, p[0].numel()) ** 0.5) + 0.02 * torch.randn(p.shape, generator=g)
    return module.eval()


def step_feeds(rng: np.random.Generator, sigma: float, sigma_next: float, x=None) -> dict[str, np.ndarray]:
    f32 = np.float32
    return {
        "x": (x if x is not None else rng.standard_normal((FRAMES, 4, LATENT, LATENT)) * sigma).astype(f32),
        "sigma": np.array([sigma], f32),
        "sigma_next": np.array([sigma_next], f32),
        "concat": rng.standard_normal((FRAMES, 4, LATENT, LATENT)).astype(f32),
        "vector": rng.standard_normal((FRAMES, VEC)).astype(f32),
        "cfg_scale": np.linspace(1.0, 2.5, FRAMES).astype(f32),
        "attn_ctx": rng.standard_normal((2, FRAMES, 1, CH)).astype(f32),
    }


def _export(module, feeds: dict, path, dtype, dynamic_axes=None):
    args = tuple(torch.from_numpy(v).to(dtype) for v in feeds.values())
    torch.onnx.export(module.to(dtype), args, str(path), input_names=list(feeds), output_names=["out"],
                      opset_version=18, dynamo=False, dynamic_axes=dynamic_axes)


def _record_calibration(step: nn.Module, path):
    """Run seeded Euler trajectories of the fp32 step module and record every step's feeds."""
    from sv3d_trt.contract.calibration import save_calibration

    samples, generation, steps = [], [], []
    sigmas = np.geomspace(80.0, 0.05, STEPS + 1)
    for g in range(GENERATIONS):
        rng = np.random.default_rng(100 + g)
        feeds = step_feeds(rng, sigmas[0], sigmas[1])
        for i in range(STEPS):
            feeds.update(sigma=np.array([sigmas[i]], np.float32), sigma_next=np.array([sigmas[i + 1]], np.float32))
            samples.append(dict(feeds))
            generation.append(g)
            steps.append(i)
            with torch.no_grad():
                x = step(*(torch.from_numpy(v) for v in feeds.values()))
            feeds["x"] = x.numpy()
    save_calibration(path, samples, generation, steps)


def make_export_dir(root, precision: str, variant: str = "sv3d_p"):
    """A directory laid out like `sv3d-trt export` output: clip.onnx, denoise_step.onnx,
    export.json and calibration/denoise_step.npz."""
    root.mkdir(parents=True, exist_ok=True)
    dtype = {"fp32": torch.float32, "fp16": torch.float16}[precision]
    step = _random_weights(TinyStep(), seed=1)
    _record_calibration(step, root / "calibration" / "denoise_step.npz")
    rng = np.random.default_rng(0)
    _export(step, step_feeds(rng, 2.0, 1.5), root / "denoise_step.onnx", dtype)
    clip = _random_weights(TinyClip(), seed=2)
    _export(clip, {"image": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)}, root / "clip.onnx", dtype)
    info = {"config": "tiny", "variant": variant, "precision": precision, "checkpoint_sha256": "ab" * 32, "opset": 18}
    (root / "export.json").write_text(json.dumps(info))
    return root


@pytest.fixture(scope="session")
def export_fp16(tmp_path_factory):
    return make_export_dir(tmp_path_factory.mktemp("onnx_fp16"), "fp16")


@pytest.fixture(scope="session")
def export_fp32(tmp_path_factory):
    return make_export_dir(tmp_path_factory.mktemp("onnx_fp32"), "fp32")


@pytest.fixture(scope="session")
def tiny_clip_dynamic(tmp_path_factory):
    """A CLIP-like graph with a dynamic batch axis (sv3d-trt builds fixed shapes only)."""
    path = tmp_path_factory.mktemp("dyn") / "clip.onnx"
    feeds = {"image": np.random.default_rng(3).standard_normal((1, 3, 16, 16)).astype(np.float32)}
    _export(_random_weights(TinyClip(), seed=2), feeds, path, torch.float32, dynamic_axes={"image": {0: "batch"}})
    return path


@pytest.fixture(scope="session")
def rtx():
    """TensorRT-RTX builds ahead of time without a GPU, so CI builds with it. Full TensorRT
    needs NVIDIA's index and a GPU: its tests skip here."""
    pytest.importorskip("tensorrt_rtx", reason="tensorrt-rtx-cu13 not installed")
    return "tensorrt-rtx"


@pytest.fixture(scope="session")
def built_fp16(rtx, export_fp16, tmp_path_factory):
    """fp16 engines for sm89 (+ manifest), built once; tests that damage them copy first."""
    from sv3d_trt.export.build import build_engines

    out = tmp_path_factory.mktemp("engines_fp16")
    build_engines(export_fp16, out, backend=rtx, targets=["sm89"])
    return out


@pytest.fixture(scope="session")
def tiny_step():
    """The fake step graph's recording layout and feed maker, for tests that make their own feeds."""
    return {"generations": GENERATIONS, "steps": STEPS, "feeds": step_feeds}

"""CLIP image tower and preprocessing vs open_clip's VisionTransformer and kornia's resize."""
from __future__ import annotations

import io
from dataclasses import replace

import pytest
import torch

from sv3d_trt.models.clip import CLIPVisionTower, clip_preprocess
from sv3d_trt.models.config import get_config

from official import official_shapes, randomize_
from tests.conftest import rel_err

PREFIX = "conditioner.embedders.0.open_clip.model.visual."


def open_clip_visual(cfg):
    """open_clip's own ViT-H-14 visual tower class at the given config's size (the reference's code)."""
    from open_clip.transformer import VisionTransformer

    return VisionTransformer(
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        width=cfg.width,
        layers=cfg.layers,
        heads=cfg.heads,
        mlp_ratio=cfg.mlp_ratio,
        output_dim=cfg.output_dim,
    )


def test_full_keys_match_checkpoint():
    expected = official_shapes(PREFIX)
    with torch.device("meta"):
        model = CLIPVisionTower(get_config("full").clip)
    actual = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert actual == expected
    assert len(actual) == 392
    assert sum(p.numel() for p in model.parameters()) == 632_076_800


def test_tiny_has_full_key_names():
    with torch.device("meta"):
        full = CLIPVisionTower(get_config("full").clip).state_dict().keys()
        tiny = CLIPVisionTower(get_config("tiny").clip).state_dict().keys()
    assert list(tiny) == list(full)


def _parity(cfg, batch: int, seed: int) -> float:
    pytest.importorskip("open_clip")
    gen = torch.Generator().manual_seed(seed)
    ours = CLIPVisionTower(cfg).eval()
    randomize_(ours, gen)
    ref = open_clip_visual(cfg).eval()
    ref.load_state_dict(ours.state_dict(), strict=True)
    pixels = torch.randn(batch, 3, cfg.image_size, cfg.image_size, generator=gen)
    with torch.no_grad():
        expected = ref(pixels)
        actual = ours(pixels)
    assert actual.shape == (batch, cfg.output_dim)
    assert expected.std() > 0.1 and expected.isfinite().all()
    err = rel_err(actual, expected)
    assert err <= 1e-5, err
    return err


def test_matches_open_clip_tiny():
    _parity(get_config("tiny").clip, batch=3, seed=0)


def test_matches_open_clip_larger_grid():
    # A 4x4 grid (17 tokens) exercises the token/head reshapes beyond the tiny preset's 5 tokens.
    _parity(replace(get_config("tiny").clip, image_size=56, layers=2), batch=2, seed=1)


@pytest.mark.slow
def test_matches_open_clip_full():
    _parity(get_config("full").clip, batch=1, seed=2)


@pytest.mark.parametrize("in_size,out_size", [(576, 224), (64, 28), (28, 28), (20, 28)])
def test_preprocess_matches_kornia(in_size, out_size):
    kornia = pytest.importorskip("kornia")
    gen = torch.Generator().manual_seed(in_size)
    image = torch.rand(2, 3, in_size, in_size, generator=gen) * 2 - 1
    resized = kornia.geometry.resize(image, (out_size, out_size), interpolation="bicubic", align_corners=True, antialias=True)
    mean = torch.tensor((0.48145466, 0.4578275, 0.40821073)).view(1, 3, 1, 1)
    std = torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(1, 3, 1, 1)
    expected = ((resized + 1.0) / 2.0 - mean) / std
    actual = clip_preprocess(image, out_size)
    assert actual.shape == (2, 3, out_size, out_size)
    assert expected.std() > 0.1
    assert rel_err(actual, expected) <= 1e-5


def test_encode_image_matches_reference_path():
    """[-1, 1] image -> kornia resize + normalise -> open_clip visual, as FrozenOpenCLIPImageEmbedder does."""
    kornia = pytest.importorskip("kornia")
    pytest.importorskip("open_clip")
    cfg = get_config("tiny").clip
    gen = torch.Generator().manual_seed(3)
    ours = CLIPVisionTower(cfg).eval()
    randomize_(ours, gen)
    ref = open_clip_visual(cfg).eval()
    ref.load_state_dict(ours.state_dict())
    image = torch.rand(2, 3, 64, 64, generator=gen) * 2 - 1
    resized = kornia.geometry.resize(image, (cfg.image_size,) * 2, interpolation="bicubic", align_corners=True, antialias=True)
    mean = torch.tensor((0.48145466, 0.4578275, 0.40821073)).view(1, 3, 1, 1)
    std = torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = ref(((resized + 1.0) / 2.0 - mean) / std)
        actual = ours.encode_image(image)
    assert expected.std() > 0.1
    assert rel_err(actual, expected) <= 1e-5


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_forward(dtype):
    cfg = get_config("tiny").clip
    gen = torch.Generator().manual_seed(4)
    model = CLIPVisionTower(cfg).eval()
    randomize_(model, gen)
    image = torch.rand(2, 3, 64, 64, generator=gen) * 2 - 1
    with torch.no_grad():
        expected = model.encode_image(image)
        actual = model.to(dtype).encode_image(image)
    assert actual.dtype == dtype
    assert actual.isfinite().all()
    assert rel_err(actual.float(), expected) <= (2e-2 if dtype == torch.float16 else 8e-2)


def test_builds_on_meta_and_loads_with_assign():
    cfg = get_config("tiny").clip
    source = CLIPVisionTower(cfg)
    with torch.device("meta"):
        model = CLIPVisionTower(cfg)
    model.load_state_dict(source.state_dict(), assign=True, strict=True)
    pixels = torch.randn(1, 3, cfg.image_size, cfg.image_size)
    with torch.no_grad():
        torch.testing.assert_close(model(pixels), source(pixels))


@pytest.mark.filterwarnings("ignore:Constant folding")
def test_preprocess_exports_to_onnx():
    """clip_preprocess is plain Pad/Conv/Resize, so an exported graph runs in onnxruntime unchanged."""
    ort = pytest.importorskip("onnxruntime")
    class Preprocess(torch.nn.Module):
        def forward(self, image):
            return clip_preprocess(image, 28)

    image = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(5)) * 2 - 1
    buffer = io.BytesIO()
    torch.onnx.export(Preprocess(), (image,), buffer, dynamo=False, opset_version=18, input_names=["image"])
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {"image": image.numpy()})
    # fp32 cubic resampling positions round differently in ORT and torch (~1e-4 abs on noise).
    assert rel_err(torch.from_numpy(actual), clip_preprocess(image, 28)) <= 1e-4

"""Checkpoint layout, loading, variant detection and the errors users see."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from sv3d_trt.errors import CheckpointError
from sv3d_trt.models.checkpoint import (
    LABEL_EMB_KEY,
    TIME_EMBED_KEY,
    UNET_PREFIX,
    checkpoint_layout,
    inspect_checkpoint,
    load_checkpoint,
    make_checkpoint,
)
from sv3d_trt.models.config import get_config

TSV = Path(__file__).resolve().parents[2].parent / "shared/reference/sv3d_p_keys.tsv"


def _tsv_layout() -> dict[str, tuple[int, ...]]:
    rows = {}
    for line in TSV.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape = line.split("\t")[:2]
        rows[key] = tuple(int(s) for s in shape.strip("()").replace(" ", "").split(",") if s)
    return rows


@pytest.mark.skipif(not TSV.exists(), reason="shared/reference/sv3d_p_keys.tsv not beside the repo")
def test_full_layout_is_the_official_file_key_for_key():
    official = _tsv_layout()
    ours = checkpoint_layout(get_config("full", "sv3d_p"))
    assert len(official) == 2212
    assert set(ours) == set(official), (sorted(set(ours) ^ set(official)))[:10]
    assert {k: s for k, s in ours.items() if s != official[k]} == {}
    ours_u = checkpoint_layout(get_config("full", "sv3d_u"))
    assert ours_u[LABEL_EMB_KEY] == (1280, 256)
    assert {k for k in ours_u if ours_u[k] != official[k]} == {LABEL_EMB_KEY}


def test_tiny_layout_has_the_full_key_names():
    for variant in ("sv3d_u", "sv3d_p"):
        assert set(checkpoint_layout(get_config("tiny", variant))) == set(checkpoint_layout(get_config("full", variant)))


def test_inspect_detects_config_and_variant(tiny_checkpoint, tiny_checkpoint_u):
    p = inspect_checkpoint(tiny_checkpoint)
    u = inspect_checkpoint(tiny_checkpoint_u)
    assert (p.name, p.variant) == ("tiny", "sv3d_p")
    assert (u.name, u.variant) == ("tiny", "sv3d_u")


def test_make_checkpoint_is_seeded_and_fully_random(tmp_path, tiny_checkpoint):
    again = make_checkpoint(tmp_path / "again.safetensors", "tiny", "sv3d_p", seed=1)
    a, b = load_file(tiny_checkpoint), load_file(again)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(v.abs().sum() > 0 for v in a.values())  # no zero-initialised output layers
    assert all(v.dtype == torch.float32 for v in a.values())


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
def test_load_every_component(tiny_checkpoint, dtype):
    models = load_checkpoint(tiny_checkpoint, dtype=dtype)
    raw = load_file(tiny_checkpoint)
    want = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    for name in ("unet", "vae_encoder", "vae_decoder", "clip"):
        module = getattr(models, name)
        assert not any(p.is_meta for p in module.parameters())
        assert all(p.dtype == want for p in module.parameters())
    w = models.unet.state_dict()["label_emb.0.0.weight"]
    assert torch.equal(w, raw[LABEL_EMB_KEY].to(want))
    assert models.variant == "sv3d_p"


# --- bad files: each gets a message that names the problem ---------------------------


def _rewrite(src, dst, edit):
    state = load_file(src)
    edit(state)
    save_file(state, str(dst))
    return dst


def test_not_a_safetensors_file(tmp_path):
    pickled = tmp_path / "model.ckpt"
    torch.save({"a": torch.ones(2)}, pickled)
    with pytest.raises(CheckpointError, match="pickled PyTorch checkpoint, not a safetensors"):
        inspect_checkpoint(pickled)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(struct.pack("<Q", 20) + b"this is not json at all")
    with pytest.raises(CheckpointError, match="header is not JSON"):
        inspect_checkpoint(junk)
    with pytest.raises(CheckpointError, match="not found"):
        inspect_checkpoint(tmp_path / "missing.safetensors")


def test_truncated_file(tmp_path, tiny_checkpoint):
    data = Path(tiny_checkpoint).read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(cut)


def test_svd_checkpoint_is_named(tmp_path):
    svd = tmp_path / "svd.safetensors"
    save_file({LABEL_EMB_KEY: torch.randn(1280, 768), TIME_EMBED_KEY: torch.randn(1280, 320)}, str(svd))
    with pytest.raises(CheckpointError, match="Stable Video Diffusion"):
        inspect_checkpoint(svd)


def test_other_checkpoint(tmp_path):
    other = tmp_path / "sd15.safetensors"
    save_file({"cond_stage_model.transformer.x": torch.randn(3)}, str(other))
    with pytest.raises(CheckpointError, match="not an SV3D checkpoint"):
        inspect_checkpoint(other)


def test_missing_unexpected_and_misshaped_keys(tmp_path, tiny_checkpoint):
    gone = UNET_PREFIX + "out.2.weight"
    missing = _rewrite(tiny_checkpoint, tmp_path / "missing.safetensors", lambda s: s.pop(gone))
    with pytest.raises(CheckpointError, match=r"1 missing: model\.diffusion_model\.out\.2\.weight"):
        load_checkpoint(missing, components=("unet",))

    extra = _rewrite(tiny_checkpoint, tmp_path / "extra.safetensors",
                     lambda s: s.__setitem__(UNET_PREFIX + "bogus.weight", torch.randn(2)))
    with pytest.raises(CheckpointError, match=r"1 unexpected: model\.diffusion_model\.bogus\.weight"):
        load_checkpoint(extra, components=("unet",))

    key = "first_stage_model.decoder.conv_out.weight"
    shaped = _rewrite(tiny_checkpoint, tmp_path / "shaped.safetensors",
                      lambda s: s.__setitem__(key, torch.randn(3, 7, 3, 3)))
    with pytest.raises(CheckpointError, match=r"mis-shaped: first_stage_model\.decoder\.conv_out\.weight \(3, 7, 3, 3\)"):
        load_checkpoint(shaped, components=("vae_decoder",))

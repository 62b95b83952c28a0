"""Checkpoint layout, loading, variant detection and the errors users see."""
from __future__ import annotations

import json
import re
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
from official import official_layout


def test_full_layout_is_the_official_file_key_for_key():
    official = official_layout()
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


# --- malformed headers: every one is a CheckpointError naming the problem, never a SafetensorError ---


def _split(path):
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def _write(dst, header, body: bytes, raw: bytes | None = None):
    blob = raw if raw is not None else json.dumps(header).encode()
    dst.write_bytes(struct.pack("<Q", len(blob)) + blob + body)
    return dst


def _first_key(header) -> str:
    return next(k for k in header if k != "__metadata__")


def _set(field, value):
    def edit(h):
        h[_first_key(h)][field] = value
    return edit


def _swap_offsets(h):
    keys = [k for k in h if k != "__metadata__"][:2]
    a, b = (h[k]["data_offsets"] for k in keys)
    h[keys[0]]["data_offsets"], h[keys[1]]["data_offsets"] = b, a  # sizes differ: a size mismatch


def _overlap(h):
    keys = sorted((k for k in h if k != "__metadata__"), key=lambda k: h[k]["data_offsets"][0])
    k0, k1 = keys[0], keys[1]
    size = h[k1]["data_offsets"][1] - h[k1]["data_offsets"][0]
    h[k1]["data_offsets"] = [h[k0]["data_offsets"][0], h[k0]["data_offsets"][0] + size]
    h[k1]["shape"], h[k1]["dtype"] = [size // 4], "F32"


@pytest.mark.parametrize("edit, message", [
    (_set("dtype", "I64"), r"dtype 'I64' is not supported"),
    (_set("dtype", "Q7"), r"dtype 'Q7' is not supported"),
    (_set("dtype", 4), r"dtype is 4, not a string"),
    (_set("shape", "3,3"), r"shape '3,3' is not a list of non-negative integers"),
    (_set("shape", [-1]), r"is not a list of non-negative integers"),
    (_set("shape", [True]), r"is not a list of non-negative integers"),
    (_set("data_offsets", [0]), r"data_offsets \[0\] is not \[begin, end\]"),
    (_set("data_offsets", {"a": 1}), r"is not \[begin, end\]"),
    (_set("data_offsets", [0, 1.5]), r"is not \[begin, end\]"),
    (_set("dtype", "F16"), r"span \d+ bytes, but F16"),
    (lambda h: h[_first_key(h)].pop("shape"), r"no 'shape'"),
    (lambda h: h.__setitem__(_first_key(h), [1, 2]), r"entry is a list, not an object"),
    (lambda h: h.__setitem__("__metadata__", {"format": 3}), r"__metadata__ must map names to strings"),
    (lambda h: h.__setitem__("__metadata__", ["x"]), r"__metadata__ must map names to strings"),
    (_swap_offsets, r"span \d+ bytes, but"),
    (_overlap, r"overlap"),
])
def test_malformed_header_entries(tmp_path, tiny_checkpoint, edit, message):
    header, body = _split(tiny_checkpoint)
    edit(header)
    bad = _write(tmp_path / "bad.safetensors", header, body)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(bad, components=("vae_encoder",))


def test_offsets_past_the_file_gaps_and_trailing_bytes(tmp_path, tiny_checkpoint):
    header, body = _split(tiny_checkpoint)
    last = max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][1])
    with pytest.raises(CheckpointError, match="truncated: tensors need"):
        inspect_checkpoint(_write(tmp_path / "short.safetensors", header, body[:-4]))
    with pytest.raises(CheckpointError, match="4 bytes after the last tensor"):
        inspect_checkpoint(_write(tmp_path / "long.safetensors", header, body + b"\0" * 4))
    begin, end = header[last]["data_offsets"]
    header[last]["data_offsets"] = [begin + 4, end + 4]
    with pytest.raises(CheckpointError, match=f"4 unused bytes before tensor '{re.escape(last)}'"):
        inspect_checkpoint(_write(tmp_path / "gap.safetensors", header, body + b"\0" * 4))


def test_duplicate_keys_and_non_utf8_header(tmp_path, tiny_checkpoint):
    header, body = _split(tiny_checkpoint)
    key = _first_key(header)
    text = json.dumps(header)
    entry = json.dumps({key: header[key]})[1:-1]
    dup = text[:-1] + ", " + entry + "}"
    with pytest.raises(CheckpointError, match=f"duplicate key '{re.escape(key)}'"):
        inspect_checkpoint(_write(tmp_path / "dup.safetensors", None, body, raw=dup.encode()))
    with pytest.raises(CheckpointError, match="header is not JSON"):
        inspect_checkpoint(_write(tmp_path / "utf16.safetensors", None, body, raw=text.encode("utf-16")))
    with pytest.raises(CheckpointError, match="header is not JSON"):
        inspect_checkpoint(_write(tmp_path / "deep.safetensors", None, body, raw=b"[" * 100_000))


def test_one_dimensional_label_embedding(tmp_path, tiny_checkpoint):
    header, body = _split(tiny_checkpoint)
    begin, end = header[LABEL_EMB_KEY]["data_offsets"]
    header[LABEL_EMB_KEY]["shape"] = [(end - begin) // 4]
    with pytest.raises(CheckpointError, match="expected a 2-D weight"):
        inspect_checkpoint(_write(tmp_path / "flat.safetensors", header, body))


@pytest.mark.parametrize("value, dtype, message", [
    (float("nan"), "fp32", "holds 1 NaN/inf value"),
    (float("inf"), "fp16", "holds 1 NaN/inf value"),
    (1e6, "fp16", "has values beyond the range of float16; load it in fp32 or bf16"),
])
def test_non_finite_weights_are_named(tmp_path, tiny_checkpoint, value, dtype, message):
    key = "first_stage_model.decoder.conv_out.bias"

    def poison(state):
        state[key] = state[key].clone()
        state[key][1] = value

    bad = _rewrite(tiny_checkpoint, tmp_path / "nan.safetensors", poison)
    with pytest.raises(CheckpointError, match=f"tensor {re.escape(key)} {message}"):
        load_checkpoint(bad, dtype=dtype, components=("vae_decoder",))


def test_header_length_that_looks_like_a_pickle(tmp_path, tiny_checkpoint):
    """A header length whose low byte is 0x80 (a pickle's first byte) is still a safetensors file."""
    header, body = _split(tiny_checkpoint)
    blob = json.dumps(header).encode()
    blob += b" " * ((0x80 - len(blob)) % 256)  # padding spaces, as safetensors' own writer adds
    path = _write(tmp_path / "x80.safetensors", None, body, raw=blob)
    assert path.read_bytes()[0] == 0x80
    assert inspect_checkpoint(path).name == "tiny"

"""Official single-file SV3D checkpoints: inspect, load, and make random ones.

The released `sv3d_u.safetensors` / `sv3d_p.safetensors` hold four networks under fixed
prefixes (sv3d.md §2.1). Our modules use the official attribute names, so loading is a
prefix strip, never a renaming table. Files are read memory-mapped and converted to the
requested dtype one tensor at a time, so a 9.4 GB fp32 file never sits twice in RAM.

`make_checkpoint` writes a random-init file with the complete official layout, including
the tensors SV3D never uses (CLIP text-tower leftovers, the conditioner's spare decoder
and post_quant_conv), so tests and demos exercise exactly the loading path users hit.
"""
from __future__ import annotations

import json
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from ..devices import check_torch_device
from ..errors import CheckpointError
from ..fileio import atomic_path
from .config import PRESETS, VARIANTS, SV3DConfig, adm_in_channels, get_config

UNET_PREFIX = "model.diffusion_model."
CLIP_PREFIX = "conditioner.embedders.0.open_clip.model.visual."
VAE_ENCODER_PREFIX = "conditioner.embedders.1.encoder."  # holds encoder.* and quant_conv.*
VAE_DECODER_PREFIX = "first_stage_model.decoder."
TEXT_LEFTOVER_PREFIX = "conditioner.embedders.0.open_clip.model."
SPARE_DECODER_PREFIX = "conditioner.embedders.1.encoder.decoder."

COMPONENTS = ("unet", "vae_encoder", "vae_decoder", "clip")
PREFIXES = {
    "unet": UNET_PREFIX,
    "vae_encoder": VAE_ENCODER_PREFIX,
    "vae_decoder": VAE_DECODER_PREFIX,
    "clip": CLIP_PREFIX,
}
LABEL_EMB_KEY = UNET_PREFIX + "label_emb.0.0.weight"
TIME_EMBED_KEY = UNET_PREFIX + "time_embed.0.weight"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


@dataclass
class SV3DModels:
    """The networks of one checkpoint, ready for inference (eval mode, no grad)."""

    config: SV3DConfig
    unet: nn.Module | None = None
    vae_encoder: nn.Module | None = None
    vae_decoder: nn.Module | None = None
    clip: nn.Module | None = None

    @property
    def variant(self) -> str:
        return self.config.variant


def build_module(component: str, config: SV3DConfig) -> nn.Module:
    """Instantiate one network from its config (call under torch.device('meta') to skip init)."""
    from .clip import CLIPVisionTower
    from .unet import VideoUNet
    from .vae import VAEDecoder, VAEEncoder

    builders = {
        "unet": lambda: VideoUNet(config.unet),
        "vae_encoder": lambda: VAEEncoder(config.vae),
        "vae_decoder": lambda: VAEDecoder(config.vae),
        "clip": lambda: CLIPVisionTower(config.clip),
    }
    return builders[component]()


# ---------------------------------------------------------------------------------------
# Reading the header: cheap, no tensor data touched.


MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit
# Float dtypes we convert from; an integer or bool "weight" is another model's file or a corrupt one.
_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    """json object_pairs_hook: a key given twice would silently keep one of two tensors."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise CheckpointError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _check_entry(key: str, entry) -> tuple[int, int]:
    """One tensor's header entry -> its (begin, end) data offsets; CheckpointError text otherwise."""
    if not isinstance(entry, dict):
        raise CheckpointError(f"tensor {key!r}: entry is a {type(entry).__name__}, not an object")
    for field_name in ("dtype", "shape", "data_offsets"):
        if field_name not in entry:
            raise CheckpointError(f"tensor {key!r}: no {field_name!r}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str):
        raise CheckpointError(f"tensor {key!r}: dtype is {dtype!r}, not a string")
    if dtype not in _ITEMSIZE:
        raise CheckpointError(f"tensor {key!r}: dtype {dtype!r} is not supported (SV3D weights are floats: "
                              f"{'/'.join(_ITEMSIZE)})")
    if not (isinstance(shape, list) and all(_is_count(d) for d in shape)):
        raise CheckpointError(f"tensor {key!r}: shape {shape!r} is not a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)):
        raise CheckpointError(f"tensor {key!r}: data_offsets {offsets!r} is not [begin, end]")
    begin, end = offsets
    nbytes = math.prod(shape) * _ITEMSIZE[dtype]
    if end - begin != nbytes:
        raise CheckpointError(f"tensor {key!r}: data_offsets {offsets} span {end - begin} bytes, but "
                              f"{dtype} {shape} needs {nbytes}")
    return begin, end


def _check_tiling(path: Path, spans: list[tuple[int, int, str]], data_size: int) -> None:
    """Tensor data must tile [0, data_size) exactly, as safetensors requires: no overlap, no gap."""
    position, previous = 0, None
    for begin, end, key in sorted(spans):
        if begin < position:
            raise CheckpointError(f"{path}: tensors {previous!r} and {key!r} overlap (bytes {begin}..{position})")
        if begin > position:
            raise CheckpointError(f"{path}: {begin - position} unused bytes before tensor {key!r} "
                                  f"(data offsets out of order or with gaps)")
        position, previous = end, key
    if position > data_size:
        raise CheckpointError(
            f"{path} is truncated: tensors need {position} bytes of data, the file holds {data_size} "
            f"({100 * data_size / max(position, 1):.1f}%); download it again")
    if position < data_size:
        raise CheckpointError(f"{path} has {data_size - position} bytes after the last tensor (not a safetensors "
                              "file, or a damaged one)")


def read_header(path: str | os.PathLike) -> dict[str, dict]:
    """Parse and validate a safetensors header; raise CheckpointError naming the problem.

    Everything safetensors would reject (or, for duplicate keys, silently resolve) is checked
    here first, so a bad file is one clear line and never a raw SafetensorError.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(9)
        (n,) = struct.unpack("<Q", head[:8]) if len(head) >= 8 else (0,)
        # A zip (torch.save) or pickle starts with "PK" or 0x80, but so may a safetensors header
        # length (0x80 is a length's low byte): it is safetensors when the JSON follows.
        if (head[:2] == b"PK" or head[:1] == b"\x80") and not (head[8:9] == b"{" and 8 + n <= size):
            raise CheckpointError(
                f"{path} is a pickled PyTorch checkpoint, not a safetensors file; "
                "sv3d-trt only loads .safetensors (no pickle): use the official sv3d_u/sv3d_p.safetensors"
            )
        if len(head) < 8:
            raise CheckpointError(f"{path} is not a safetensors file (only {size} bytes)")
        f.seek(8)
        if n == 0 or n > MAX_HEADER_BYTES:
            raise CheckpointError(f"{path} is not a safetensors file (bad header length {n})")
        if 8 + n > size:
            raise CheckpointError(f"{path} is truncated: header says {n} bytes, file has {size - 8}")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f"{path} is not a safetensors file (header is not JSON: {e})") from None
    except CheckpointError as e:
        raise CheckpointError(f"{path}: header has a {e}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a safetensors file (header is not a JSON object)")
    metadata = header.pop("__metadata__", {})
    if not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise CheckpointError(f"{path}: __metadata__ must map names to strings, got {str(metadata)[:80]}")
    try:
        spans = [(*_check_entry(key, entry), key) for key, entry in header.items()]
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    _check_tiling(path, spans, size - 8 - n)
    return header


def inspect_checkpoint(path: str | os.PathLike) -> SV3DConfig:
    """Identify the config (full/tiny) and variant (sv3d_u/sv3d_p) of a checkpoint by shapes."""
    header = read_header(path)
    if LABEL_EMB_KEY not in header or TIME_EMBED_KEY not in header:
        unet_keys = sum(k.startswith(UNET_PREFIX) for k in header)
        raise CheckpointError(
            f"{path} is not an SV3D checkpoint: no {LABEL_EMB_KEY!r} "
            f"({len(header)} tensors, {unet_keys} under {UNET_PREFIX!r})"
        )
    for key in (LABEL_EMB_KEY, TIME_EMBED_KEY):
        if len(header[key]["shape"]) != 2:
            raise CheckpointError(f"{path}: {key} has shape {header[key]['shape']}, expected a 2-D weight")
    adm = header[LABEL_EMB_KEY]["shape"][1]
    by_adm = {adm_in_channels(v): v for v in VARIANTS}
    if adm not in by_adm:
        hint = " — this looks like a Stable Video Diffusion (SVD) checkpoint" if adm == 768 else ""
        raise CheckpointError(
            f"{path} is not an SV3D checkpoint: label_emb takes {adm} inputs, expected 256 (sv3d_u) "
            f"or 1280 (sv3d_p){hint}"
        )
    width = header[TIME_EMBED_KEY]["shape"][1]
    for preset in PRESETS.values():
        if preset.unet.model_channels == width:
            return preset.with_variant(by_adm[adm])
    raise CheckpointError(f"{path}: UNet width {width} matches no known config ({sorted(PRESETS)})")


def _expected_shapes(component: str, config: SV3DConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        module = build_module(component, config)
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _check_keys(path, component: str, prefix: str, expected: dict, header: dict) -> None:
    found = {k[len(prefix):]: tuple(v["shape"]) for k, v in header.items() if k.startswith(prefix)}
    if component == "vae_encoder":  # the conditioner's spare decoder shares this prefix
        found = {k: s for k, s in found.items() if k.startswith(("encoder.", "quant_conv."))}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    misshaped = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    if not (missing or unexpected or misshaped):
        return

    def first(keys: list[str], fmt=lambda k: prefix + k) -> str:
        shown = ", ".join(fmt(k) for k in keys[:5])
        return shown + (f" ... (+{len(keys) - 5} more)" if len(keys) > 5 else "")

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing: {first(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected: {first(unexpected)}")
    if misshaped:
        parts.append(
            f"{len(misshaped)} mis-shaped: "
            + first(misshaped, lambda k: f"{prefix}{k} {found[k]} (expected {expected[k]})")
        )
    raise CheckpointError(f"{path}: {component} does not match the SV3D layout; " + "; ".join(parts))


def load_checkpoint(
    path: str | os.PathLike,
    dtype: str | torch.dtype = "fp32",
    device: str | torch.device = "cpu",
    components: Iterable[str] = COMPONENTS,
) -> SV3DModels:
    """Load the requested networks from an official (or make_checkpoint) safetensors file.

    Modules are built on the meta device and each tensor is read from the memory map,
    converted to `dtype` on `device`, and assigned: one copy of the weights, never two.
    """
    from safetensors import SafetensorError, safe_open

    dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    device = check_torch_device(str(device))  # "cuda" without a GPU: one line now, not a driver error later
    config = inspect_checkpoint(path)
    header = read_header(path)
    models = SV3DModels(config=config)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for component in components:
                prefix = PREFIXES[component]
                expected = _expected_shapes(component, config)
                _check_keys(path, component, prefix, expected, header)
                with torch.device("meta"):
                    module = build_module(component, config)
                state = {}
                for key in expected:
                    t = f.get_tensor(prefix + key)
                    state[key] = t.to(device=device, dtype=dtype)
                    _check_finite(path, prefix + key, t, state[key])
                    del t
                module.load_state_dict(state, assign=True)
                del state
                module.eval().requires_grad_(False)
                setattr(models, component, module)
    except SafetensorError as e:  # read_header checks what safetensors checks; this is the backstop
        raise CheckpointError(f"{path} cannot be read: {e}") from None
    return models


def _check_finite(path, key: str, stored: torch.Tensor, loaded: torch.Tensor) -> None:
    """NaN/inf in a weight is a damaged file, not an fp16 problem: say which, before any run."""
    if bool(torch.isfinite(loaded).all()):  # sync: once per tensor
        return
    bad = int((~torch.isfinite(stored)).sum())
    if bad:
        raise CheckpointError(f"{path}: tensor {key} holds {bad} NaN/inf value(s) of {stored.numel()}; "
                              "the file is damaged: download it again")
    raise CheckpointError(f"{path}: tensor {key} has values beyond the range of "
                          f"{str(loaded.dtype).replace('torch.', '')}; load it in fp32 or bf16")


# ---------------------------------------------------------------------------------------
# Random checkpoints with the official layout.


def checkpoint_layout(config: SV3DConfig) -> dict[str, tuple[int, ...]]:
    """Every key and shape of the official file for this config, in file order."""
    layout: dict[str, tuple[int, ...]] = {}
    for component in ("unet", "clip"):
        for k, s in _expected_shapes(component, config).items():
            layout[PREFIXES[component] + k] = s
    c = config.clip
    layout.update({
        TEXT_LEFTOVER_PREFIX + "positional_embedding": (c.text_context, c.text_width),
        TEXT_LEFTOVER_PREFIX + "token_embedding.weight": (c.vocab_size, c.text_width),
        TEXT_LEFTOVER_PREFIX + "ln_final.weight": (c.text_width,),
        TEXT_LEFTOVER_PREFIX + "ln_final.bias": (c.text_width,),
        TEXT_LEFTOVER_PREFIX + "text_projection": (c.text_width, c.output_dim),
        TEXT_LEFTOVER_PREFIX + "logit_scale": (),
    })
    for k, s in _expected_shapes("vae_encoder", config).items():
        layout[VAE_ENCODER_PREFIX + k] = s
    decoder = _expected_shapes("vae_decoder", config)
    for k, s in decoder.items():
        layout[SPARE_DECODER_PREFIX + k] = s
    z = config.vae.z_channels
    layout[VAE_ENCODER_PREFIX + "post_quant_conv.weight"] = (z, z, 1, 1)
    layout[VAE_ENCODER_PREFIX + "post_quant_conv.bias"] = (z,)
    for k, s in decoder.items():
        layout[VAE_DECODER_PREFIX + k] = s
    return layout


def random_tensor(key: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """A deterministic random fp32 tensor for `key`: every tensor non-zero, scaled to keep
    activations O(1) (the official init zeroes output layers, which would make every
    comparison compare zeros)."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(key.encode())) % 2**63)
    t = torch.randn(shape, generator=g)
    name = key.rsplit(".", 1)[-1]
    if name == "logit_scale":
        return torch.full(shape, math.log(1 / 0.07))
    if name == "mix_factor":
        return t
    if len(shape) == 1 and name == "weight":  # norm gains
        return 1.0 + 0.1 * t
    if len(shape) == 1:  # biases, class embedding
        return 0.05 * t
    if name in ("proj", "text_projection"):  # used as x @ proj: fan-in is dim 0
        return t / math.sqrt(shape[0])
    if "embedding" in name:
        return 0.1 * t
    fan_in = math.prod(shape[1:])
    return t / math.sqrt(fan_in)


def make_checkpoint(
    out: str | os.PathLike,
    config: str | SV3DConfig = "tiny",
    variant: str = "sv3d_p",
    seed: int = 0,
    progress=None,
) -> Path:
    """Write a random-init checkpoint with the official key layout (fp32), atomically.

    Streams tensor by tensor (the full config is 9.4 GB): safetensors' own writer needs
    the whole dict in memory, so the format (8-byte header length, JSON header, raw
    little-endian data) is written here directly.
    """
    cfg = get_config(config, variant) if isinstance(config, str) else config.with_variant(variant)
    layout = checkpoint_layout(cfg)
    header, offset = {}, 0
    for key, shape in layout.items():
        nbytes = 4 * math.prod(shape)
        header[key] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header["__metadata__"] = {"format": "pt", "sv3d_trt": f"random {cfg.name} {variant} seed={seed}"}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # keep tensor data 8-byte aligned
    out = Path(out)
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for key, shape in layout.items():
            f.write(random_tensor(key, shape, seed).contiguous().numpy().tobytes())
            if progress is not None:
                progress(4 * math.prod(shape))
    return out

"""Shared by the model tests: the official key list and every-tensor randomisation."""
from __future__ import annotations

import functools
import re
from pathlib import Path

import torch

# The tensor names and shapes of the official sv3d_p.safetensors (a copy of the project's
# reference list, so a fresh clone runs the key-for-key checks).
KEYS_TSV = Path(__file__).resolve().parents[1] / "data" / "sv3d_p_keys.tsv"


@functools.cache
def official_layout() -> dict[str, tuple[int, ...]]:
    """key -> shape of every row of sv3d_p_keys.tsv, in file order ('#' lines are comments)."""
    rows = {}
    for line in KEYS_TSV.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape = line.split("\t")[:2]
        rows[key] = tuple(int(d) for d in re.findall(r"\d+", shape))
    return rows


def official_shapes(prefix: str, keep: str = "") -> dict[str, tuple[int, ...]]:
    """Rows of sv3d_p_keys.tsv under `prefix` whose remainder matches `keep`, prefix removed."""
    return {key[len(prefix):]: shape for key, shape in official_layout().items()
            if key.startswith(prefix) and re.match(keep, key[len(prefix):])}


def randomize_(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Every tensor random: norm gains around 1, other vectors around 0, matrices/kernels ~ 1/sqrt(fan_in)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if p.ndim >= 2:
                p.copy_(noise / p[0].numel() ** 0.5)
            elif re.search(r"(^|\.)(ln_\w+|norm\w*)\.weight$", name):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.1 * noise)

"""Shared by the model tests: the official key list and every-tensor randomisation."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

KEYS_TSV = Path(__file__).resolve().parents[2].parent / "shared/reference/sv3d_p_keys.tsv"


def official_shapes(prefix: str, keep: str = "") -> dict[str, tuple[int, ...]]:
    """Rows of sv3d_p_keys.tsv under `prefix` whose remainder matches `keep`, prefix removed."""
    if not KEYS_TSV.exists():
        pytest.skip(f"official key list not found at {KEYS_TSV}")
    shapes = {}
    for line in KEYS_TSV.read_text().splitlines():
        if line.startswith("#") or not line.startswith(prefix):
            continue
        key, shape = line.split("\t")
        key = key[len(prefix) :]
        if re.match(keep, key):
            shapes[key] = tuple(int(d) for d in re.findall(r"\d+", shape))
    return shapes


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

"""Shared fixtures: tiny random checkpoints with the official key layout, made once per session."""
from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config, items):
    run_slow = os.environ.get("SV3D_SLOW") == "1"
    skip_slow = pytest.mark.skip(reason="slow/full-size check: set SV3D_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(skip_slow)
        if "gpu" in item.keywords:
            try:
                import torch

                has_cuda = torch.cuda.is_available()
            except ImportError:
                has_cuda = False
            if not has_cuda:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))

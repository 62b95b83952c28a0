"""Device strings (`--device`): checked for form before anything loads, and for presence
before a torch backend puts weights on them. Torch-free until a torch device is checked."""
from __future__ import annotations

import re

from .errors import BackendUnavailableError

_FORM = re.compile(r"cpu|cuda(:\d+)?")


def parse_device(device: str) -> str:
    """`cpu`, `cuda` or `cuda:N` (surrounding spaces and case ignored), else BackendUnavailableError."""
    text = str(device).strip().lower()
    if not _FORM.fullmatch(text):
        raise BackendUnavailableError(f"unknown device {device!r}: use cpu, cuda or cuda:N (N = 0, 1, ...)")
    return text


def check_torch_device(device: str) -> str:
    """parse_device, then make sure torch can use it: a CUDA build, a driver, the N-th GPU."""
    import torch

    device = parse_device(device)
    if device == "cpu":
        return device
    if not torch.cuda.is_available():
        why = ("this torch is a CPU-only build; install a CUDA build of torch (https://pytorch.org)"
               if torch.version.cuda is None else f"torch {torch.__version__} finds no NVIDIA GPU or driver")
        raise BackendUnavailableError(f"--device {device}: {why}; or use --device cpu")
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise BackendUnavailableError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) "
                                      f"visible (cuda:0..cuda:{torch.cuda.device_count() - 1})")
    return device

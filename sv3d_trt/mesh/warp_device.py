"""One place that starts NVIDIA Warp and maps torch devices and tensors onto it.

Warp is the kernel language of the mesh stage (see `sv3d_trt.mesh.raster` for why): the same
`@wp.kernel` source compiles to native CPU code and to CUDA, and reads torch memory in place.
"""
from __future__ import annotations

import ctypes
import os
import sys
from contextlib import contextmanager

import torch
import warp as wp

from ..errors import BackendUnavailableError

# Libraries do not print: Warp's start-up banner and per-module compile lines go quiet.
wp.config.log_level = wp.LOG_WARNING
# The driver libraries Warp's native loader tries (warp/native/cuda_util.cpp, init_cuda_driver).
_CUDA_DRIVERS = ("nvcuda.dll",) if sys.platform == "win32" else ("libcuda.so", "libcuda.so.1")
_started = False


def cuda_driver_present() -> bool:
    """Whether the NVIDIA driver library loads, the way Warp's own loader would find it."""
    for name in _CUDA_DRIVERS:
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


@contextmanager
def _stderr_silenced():
    """Point file descriptor 2 at the null device (native code prints there, below Python's sys.stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _start() -> None:
    """wp.init once. Without a driver, Warp's native start-up prints "Warp CUDA warning: Could not find or
    load the NVIDIA CUDA driver" straight to fd 2 (no setting turns it off); that line says nothing to a
    CPU user, so it is silenced exactly when it is the only thing Warp's CUDA probe can print."""
    global _started
    if _started:
        return
    if cuda_driver_present():
        wp.init()
    else:
        with _stderr_silenced():
            wp.init()
    _started = True


def warp_device(device: torch.device | str) -> str:
    """Start Warp once (quietly) and return the Warp name of a torch device."""
    _start()
    device = torch.device(device)
    if device.type == "cpu":
        return "cpu"
    if device.type == "cuda":
        name = f"cuda:{device.index or 0}"
        if not wp.is_cuda_available():
            raise BackendUnavailableError(f"Warp cannot use {name}: no CUDA driver visible to Warp")
        return name
    raise BackendUnavailableError(f"the mesh kernels run on cpu or cuda, not {device.type}")


def to_warp(tensor: torch.Tensor, dtype=None) -> wp.array:
    """A Warp view of a contiguous torch tensor (no copy; gradients are not tracked)."""
    warp_device(tensor.device)
    return wp.from_torch(tensor.detach().contiguous(), dtype=dtype, requires_grad=False)


def launch(kernel, dim, inputs: list, device: torch.device | str) -> None:
    """wp.launch on the torch device, ordered on torch's current CUDA stream (no races with torch ops)."""
    device = torch.device(device)
    name = warp_device(device)
    if device.type == "cuda":
        wp.launch(kernel, dim=dim, inputs=inputs, device=name, stream=wp.stream_from_torch(torch.cuda.current_stream(device)))
    else:
        wp.launch(kernel, dim=dim, inputs=inputs, device=name)

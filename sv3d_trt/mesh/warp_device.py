"""One place that starts NVIDIA Warp and maps torch devices and tensors onto it.

Warp is the kernel language of the mesh stage (see `sv3d_trt.mesh.raster` for why): the same
`@wp.kernel` source compiles to native CPU code and to CUDA, and reads torch memory in place.
"""
from __future__ import annotations

import torch
import warp as wp

from ..errors import BackendUnavailableError

# Libraries do not print: Warp's start-up banner and per-module compile lines go quiet.
wp.config.log_level = wp.LOG_WARNING
_started = False


def warp_device(device: torch.device | str) -> str:
    """Start Warp once (quietly) and return the Warp name of a torch device."""
    global _started
    if not _started:
        wp.init()
        _started = True
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

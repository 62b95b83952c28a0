"""Timing done right: synchronised clocks, warm-up excluded, robust statistics.

A clock brackets one call. On a CUDA torch backend it records CUDA events on the current
stream (GPU time between the two points, no host jitter); everywhere else it reads the wall
clock after synchronising the backend (`backend.synchronize()` when it has one: a backend
that returns before its device work is done must expose it). Numpy outputs are synchronous
by construction, so on CPU the wall clock alone is right; the torch thread count is reported
in the machine description. With neither events nor a sync (`clock.synchronizes` False), a
caller timing a call that returns a device array must fetch it to the host inside the call.

Each measured call gets its iteration index so the caller can rotate through several input
buffers: timing the same buffer again and again lets caches (L2, the CPU's LLC) flatter the
result.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class Stats:
    """Summary of the measured (post-warm-up) calls of one stage, in seconds."""

    samples: tuple[float, ...]

    def __post_init__(self):
        if not self.samples:
            raise ValueError("no samples: a stage needs at least one measured call")

    @property
    def median(self) -> float:
        return float(np.median(self.samples))

    @property
    def p10(self) -> float:
        return float(np.percentile(self.samples, 10))

    @property
    def p90(self) -> float:
        return float(np.percentile(self.samples, 90))

    @property
    def mean(self) -> float:
        return float(np.mean(self.samples))

    def to_json(self) -> dict:
        return {"median_ms": 1e3 * self.median, "p10_ms": 1e3 * self.p10, "p90_ms": 1e3 * self.p90,
                "mean_ms": 1e3 * self.mean, "iters": len(self.samples)}


class WallClock:
    """perf_counter around the call, after synchronising the device on both sides."""

    method = "wall-clock"

    def __init__(self, synchronize: Callable[[], Any] | None = None):
        self._sync = synchronize or (lambda: None)
        # Without a device sync, only outputs fetched to the host are known to be complete.
        self.synchronizes = synchronize is not None

    def time(self, fn: Callable[[], Any]) -> float:
        self._sync()
        t0 = time.perf_counter()
        fn()
        self._sync()
        return time.perf_counter() - t0


class CudaEventClock:
    """CUDA events recorded on the current stream around the call (torch backends on a GPU)."""

    method = "cuda-events"
    synchronizes = True

    def __init__(self, device):
        import torch

        self._torch = torch
        self._device = device

    def time(self, fn: Callable[[], Any]) -> float:
        cuda = self._torch.cuda
        start, end = cuda.Event(enable_timing=True), cuda.Event(enable_timing=True)
        cuda.synchronize(self._device)  # nothing queued before the call may be billed to it
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3


def clock_for(backend) -> WallClock | CudaEventClock:
    """The right clock for a backend: CUDA events for torch on a GPU, else a synchronised wall clock."""
    device = backend.device
    if getattr(device, "type", None) == "cuda":  # a torch.device: the torch backends on a GPU
        return CudaEventClock(device)
    return WallClock(backend.synchronize)


def measure(fn: Callable[[int], Any], clock, warmup: int, iters: int) -> Stats:
    """Call fn(i) `warmup` times unmeasured, then `iters` times measured; i counts every call,
    so fn can pick input buffer i % n and warm-up calls touch the same buffers."""
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    for i in range(warmup):
        clock.time(lambda i=i: fn(i))
    return Stats(tuple(clock.time(lambda i=i: fn(i)) for i in range(warmup, warmup + iters)))

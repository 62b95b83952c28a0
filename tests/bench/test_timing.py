"""Timing helpers: warm-up excluded, every call sees its iteration index, synchronised clock."""
from __future__ import annotations

import time

import numpy as np
import pytest

from sv3d_trt.bench.timing import Stats, WallClock, clock_for, measure


class CountingClock:
    """Returns the iteration index of the call as its 'time', so samples show which calls were kept."""

    def __init__(self):
        self.calls = []

    def time(self, fn):
        self.calls.append(fn())
        return float(self.calls[-1])


def test_measure_excludes_warmup_and_passes_indices():
    clock = CountingClock()
    stats = measure(lambda i: i, clock, warmup=2, iters=4)
    assert clock.calls == [0, 1, 2, 3, 4, 5]
    assert stats.samples == (2.0, 3.0, 4.0, 5.0)


def test_stats_percentiles():
    samples = np.random.default_rng(0).uniform(0.5, 2.0, 101)
    stats = Stats(tuple(samples))
    assert stats.median == pytest.approx(np.median(samples))
    assert stats.p10 < stats.median < stats.p90
    assert stats.to_json()["median_ms"] == pytest.approx(1e3 * np.median(samples))
    with pytest.raises(ValueError):
        Stats(())


def test_wall_clock_synchronises_around_the_call():
    events = []
    clock = WallClock(lambda: events.append("sync"))
    seconds = clock.time(lambda: (events.append("call"), time.sleep(0.01)))
    assert events == ["sync", "call", "sync"]
    assert seconds >= 0.01
    assert clock.synchronizes


def test_clock_for_a_cpu_backend_syncs_through_the_protocol():
    """Every backend has synchronize() (runtime/backend.py); off CUDA the wall clock calls it
    before and after the timed call, so queued work is billed to the call that queued it."""
    calls = []

    class Backend:
        device = "cpu"

        def synchronize(self):
            calls.append("sync")

    clock = clock_for(Backend())
    clock.time(lambda: calls.append("call"))
    assert clock.method == "wall-clock" and clock.synchronizes
    assert calls == ["sync", "call", "sync"]

"""The few CUDA runtime objects the TensorRT runner needs, over cuda-python (no torch).

Device buffers, pinned host arrays (numpy views of page-locked memory, so async copies are
truly async), streams, events and graphs. cuda-python is imported on first use, so importing
this module needs neither cuda-python nor a GPU.
"""
from __future__ import annotations

import contextlib
import ctypes
from typing import Iterator

import numpy as np

from ..errors import BackendUnavailableError

_INSTALL = "pip install cuda-python"


def _rt():
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:  # cuda-python < 12.6 spells it cuda.cudart
            from cuda import cudart as runtime
        except ImportError as e:
            raise BackendUnavailableError(f"the TensorRT backends need cuda-python ({e}); `{_INSTALL}`") from e
    return runtime


def check(result, call: str):
    """cuda-python returns (cudaError_t, *values): raise on error, return the value(s)."""
    rt = _rt()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != rt.cudaError_t.cudaSuccess:
        _, text = rt.cudaGetErrorString(err)
        text = text.decode() if isinstance(text, bytes) else str(text)
        if err == rt.cudaError_t.cudaErrorMemoryAllocation:
            raise BackendUnavailableError(f"CUDA out of memory in {call}")
        raise BackendUnavailableError(f"CUDA call {call} failed: {err.name if hasattr(err, 'name') else err} ({text})")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def set_device(device: int) -> None:
    """Select the GPU and create its primary context (TensorRT and the runtime cache need one)."""
    rt = _rt()
    check(rt.cudaSetDevice(device), "cudaSetDevice")
    check(rt.cudaFree(0), "cudaFree(0)")


def compute_capability(device: int) -> tuple[int, int]:
    rt = _rt()
    attr = rt.cudaDeviceAttr
    major = check(rt.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMajor, device), "cudaDeviceGetAttribute")
    minor = check(rt.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMinor, device), "cudaDeviceGetAttribute")
    return int(major), int(minor)


def device_name(device: int) -> str:
    props = check(_rt().cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name
    return (name.split(b"\0")[0].decode() if isinstance(name, bytes) else str(name)).strip()


class DeviceBuffer:
    """`nbytes` of device memory, freed with the object (or `free()`)."""

    def __init__(self, nbytes: int, what: str = "buffer"):
        self.nbytes = int(nbytes)
        self.ptr = int(check(_rt().cudaMalloc(max(self.nbytes, 1)), f"cudaMalloc({self.nbytes} B for {what})"))

    def free(self) -> None:
        if self.ptr:
            check(_rt().cudaFree(self.ptr), "cudaFree")
            self.ptr = 0

    def __del__(self):
        with contextlib.suppress(Exception):
            self.free()


class PinnedArray:
    """A numpy array in page-locked host memory (`.array`), so copies to/from it overlap compute."""

    def __init__(self, shape: tuple[int, ...], dtype):
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        self.ptr = int(check(_rt().cudaMallocHost(max(nbytes, 1)), f"cudaMallocHost({nbytes} B)"))
        raw = (ctypes.c_uint8 * max(nbytes, 1)).from_address(self.ptr)
        self.array = np.frombuffer(raw, dtype=np.uint8, count=nbytes).view(dtype).reshape(shape)

    def free(self) -> None:
        if self.ptr:
            self.array = None
            check(_rt().cudaFreeHost(self.ptr), "cudaFreeHost")
            self.ptr = 0

    def __del__(self):
        with contextlib.suppress(Exception):
            self.free()


class Stream:
    def __init__(self):
        rt = _rt()
        self.handle = check(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking), "cudaStreamCreateWithFlags")

    @property
    def ptr(self) -> int:
        return int(self.handle)

    def synchronize(self) -> None:  # sync
        check(_rt().cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")

    def wait(self, event: "Event") -> None:
        check(_rt().cudaStreamWaitEvent(self.handle, event.handle, 0), "cudaStreamWaitEvent")


class Event:
    def __init__(self, timing: bool = False):
        rt = _rt()
        flags = rt.cudaEventDefault if timing else rt.cudaEventDisableTiming
        self.handle = check(rt.cudaEventCreateWithFlags(flags), "cudaEventCreateWithFlags")

    def record(self, stream: Stream) -> None:
        check(_rt().cudaEventRecord(self.handle, stream.handle), "cudaEventRecord")

    def synchronize(self) -> None:  # sync
        check(_rt().cudaEventSynchronize(self.handle), "cudaEventSynchronize")

    def seconds_since(self, start: "Event") -> float:
        return check(_rt().cudaEventElapsedTime(start.handle, self.handle), "cudaEventElapsedTime") / 1000.0


def copy_to_device(dst_ptr: int, src: PinnedArray | np.ndarray, stream: Stream, nbytes: int | None = None,
                   src_ptr: int | None = None) -> None:
    """Async host -> device copy of a pinned array (or `nbytes` from `src_ptr`) on `stream`."""
    rt = _rt()
    ptr = src_ptr if src_ptr is not None else src.ptr
    count = nbytes if nbytes is not None else src.array.nbytes
    check(rt.cudaMemcpyAsync(dst_ptr, ptr, count, rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream.handle),
          "cudaMemcpyAsync(HtoD)")


def copy_to_host(dst_ptr: int, src_ptr: int, nbytes: int, stream: Stream) -> None:
    """Async device -> pinned host copy on `stream`."""
    rt = _rt()
    check(rt.cudaMemcpyAsync(dst_ptr, src_ptr, nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream.handle),
          "cudaMemcpyAsync(DtoH)")


class Graph:
    """A captured, instantiated CUDA graph: `with Graph.capture(stream) as g: <enqueue work>`,
    then `g.launch(stream)` replays it with no per-kernel host work."""

    def __init__(self):
        self.graph = None
        self.exec = None

    @classmethod
    @contextlib.contextmanager
    def capture(cls, stream: Stream) -> Iterator["Graph"]:
        rt = _rt()
        g = cls()
        check(rt.cudaStreamBeginCapture(stream.handle, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal),
              "cudaStreamBeginCapture")
        try:
            yield g
        finally:  # always end the capture, or the stream stays unusable
            g.graph = check(rt.cudaStreamEndCapture(stream.handle), "cudaStreamEndCapture")
        g.exec = check(rt.cudaGraphInstantiate(g.graph, 0), "cudaGraphInstantiate")

    def launch(self, stream: Stream) -> None:
        check(_rt().cudaGraphLaunch(self.exec, stream.handle), "cudaGraphLaunch")

    def __del__(self):
        with contextlib.suppress(Exception):
            rt = _rt()
            if self.exec is not None:
                rt.cudaGraphExecDestroy(self.exec)
            if self.graph is not None:
                rt.cudaGraphDestroy(self.graph)

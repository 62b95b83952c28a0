"""Peak memory of one backend's run, in a process that runs several backends in turn.

Host: the kernel's resident-set high-water mark (VmHWM), reset before each backend by writing
5 to /proc/self/clear_refs (Linux), so each backend gets its own peak, not the process's.
GPU: the torch caching allocator's peak (exact for torch backends), and the device's used
memory polled through NVML every 10 ms (catches TensorRT/ORT allocations torch never sees;
device-wide, so other processes on the same GPU count too).
"""
from __future__ import annotations

import threading

_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


def _status_bytes(field: str) -> int | None:
    try:
        with open(_STATUS) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        return None
    return None


def _reset_host_peak() -> bool:
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")  # "reset the peak resident set size" (proc(5))
        return True
    except OSError:
        return False


def _torch_cuda():
    """torch.cuda when torch is already imported and CUDA initialised (never imports torch)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda
    return None


class _NvmlPoller:
    """Peak device memory used, sampled on a thread while the backend runs."""

    def __init__(self, index: int = 0, period_s: float = 0.01):
        import pynvml

        self._nvml = pynvml
        pynvml.nvmlInit()
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self._period = period_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used)
            self._stop.wait(self._period)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        self._nvml.nvmlShutdown()
        return self.peak


def _start_nvml(use_gpu: bool) -> _NvmlPoller | None:
    if not use_gpu:
        return None
    try:
        import pynvml
    except ImportError:
        return None
    try:
        return _NvmlPoller()
    except pynvml.NVMLError:  # no driver / no device
        return None


class MemoryMonitor:
    """Bracket one backend's run: `start()`, run, `stop()` -> {field: bytes}; `close()` always."""

    def __init__(self, use_gpu: bool):
        self.use_gpu = use_gpu
        self._nvml = None
        self._host_reset = False

    def start(self) -> None:
        self._host_reset = _reset_host_peak()
        cuda = _torch_cuda()
        if cuda is not None:
            cuda.reset_peak_memory_stats()
        self._nvml = _start_nvml(self.use_gpu)

    def stop(self) -> dict:
        out = {}
        peak = _status_bytes("VmHWM")
        if peak is not None:
            # Without a reset the high-water mark is the whole process's so far: say so.
            out["host_peak_rss_bytes" if self._host_reset else "host_process_peak_rss_bytes"] = peak
        cuda = _torch_cuda()
        if cuda is not None:
            out["gpu_torch_peak_allocated_bytes"] = cuda.max_memory_allocated()
        if self._nvml is not None:
            out["gpu_device_peak_used_bytes"] = self._nvml.stop()
            self._nvml = None
        return out

    def close(self) -> None:
        """Stop the NVML poller if `stop()` was not reached (the run raised)."""
        if self._nvml is not None:
            self._nvml.stop()
            self._nvml = None

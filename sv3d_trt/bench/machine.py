"""What the benchmark ran on, and the physical ceilings it is read against.

`describe_machine` names the hardware and every library version that changes a figure.
`measure_peaks` measures, once per run, the two roofline ceilings of the device: a large
matmul's throughput (the compute floor of the UNet's GEMM/conv work) and a device-to-device
copy's bandwidth (the floor of memory-bound glue). Measured, not taken from a datasheet, so the
"fraction of peak" of a stage compares against what this machine actually reaches.
On CUDA they use torch on the device; on CPU, numpy (its BLAS and memcpy).
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import time
from dataclasses import asdict, dataclass

import numpy as np

# Versions worth recording: distribution name -> key in the machine description.
_PACKAGES = {
    "torch": "torch",
    "onnxruntime": "onnxruntime",
    "onnxruntime-gpu": "onnxruntime_gpu",
    "onnx": "onnx",
    "tensorrt": "tensorrt",
    "tensorrt-cu12": "tensorrt",
    "tensorrt-cu13": "tensorrt",
    "tensorrt-rtx-cu12": "tensorrt_rtx",
    "tensorrt-rtx-cu13": "tensorrt_rtx",
    "triton": "triton",
    "numpy": "numpy",
    "sv3d-trt": "sv3d_trt",
}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict[str, str]:
    out = {}
    for dist, key in _PACKAGES.items():
        try:
            out[key] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _gpu(device: str) -> dict:
    """GPU name, memory, compute capability, driver and CUDA runtime (torch, then NVML)."""
    info: dict = {}
    try:
        import torch

        if torch.cuda.is_available():
            dev = torch.device(device if device.startswith("cuda") else "cuda")
            props = torch.cuda.get_device_properties(dev)
            info.update(name=props.name, memory_bytes=props.total_memory,
                        compute_capability=f"{props.major}.{props.minor}", cuda_runtime=torch.version.cuda,
                        cudnn=str(torch.backends.cudnn.version()))
    except ImportError:
        pass
    try:
        import pynvml
    except ImportError:
        return info
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:  # no driver on this machine
        return info
    try:
        info["driver"] = pynvml.nvmlSystemGetDriverVersion()
        if "name" not in info and pynvml.nvmlDeviceGetCount() > 0:
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            info["name"] = pynvml.nvmlDeviceGetName(handle)
            info["memory_bytes"] = pynvml.nvmlDeviceGetMemoryInfo(handle).total
    finally:
        pynvml.nvmlShutdown()
    return info


def describe_machine(device: str = "cpu") -> dict:
    """Hardware and software of this run, for the JSON report."""
    threads = None
    try:
        import torch

        threads = torch.get_num_threads()
    except ImportError:
        pass
    return {
        "hostname": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "gpu": _gpu(device) if device.startswith("cuda") else None,
        "versions": _versions(),
    }


@dataclass(frozen=True)
class Peaks:
    """Measured roofline ceilings of the benchmark device."""

    device: str
    matmul_library: str  # which implementation reached the peak
    matmul_dtype: str
    matmul_size: int
    matmul_tflops: float  # 2 n^3 / best time of an n x n x n matmul
    copy_bytes: int
    copy_gbps: float  # (read + write) bytes / best time of a buffer copy

    def to_json(self) -> dict:
        return asdict(self)


def _best_seconds(fn, sync, reps: int) -> float:
    """Fastest of `reps` calls after one warm-up: a ceiling is what the device can reach, so the
    best call counts, not the median (other processes only ever slow a call down)."""
    fn()
    sync()  # warm-up: BLAS thread pools, cuBLAS handles, page faults
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def _numpy_matmul_seconds(n: int, reps: int) -> float:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty_like(a)
    return _best_seconds(lambda: np.matmul(a, b, out=out), lambda: None, reps)


def _torch_cpu_matmul_seconds(n: int, reps: int) -> float | None:
    try:
        import torch
    except ImportError:
        return None
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    out = torch.empty_like(a)
    return _best_seconds(lambda: torch.matmul(a, b, out=out), lambda: None, reps)


def _peaks_cpu(matmul_size: int, copy_bytes: int, reps: int) -> Peaks:
    # Backends reach the CPU's matmul peak through different BLAS (numpy's OpenBLAS, torch's
    # MKL/oneDNN, onnxruntime's MLAS): take the faster of the two we can call.
    times = {"numpy": _numpy_matmul_seconds(matmul_size, reps)}
    torch_seconds = _torch_cpu_matmul_seconds(matmul_size, reps)
    if torch_seconds is not None:
        times["torch"] = torch_seconds
    library = min(times, key=times.get)
    src = np.full(copy_bytes // 4, 1.5, dtype=np.float32)  # memcpy speed does not depend on the values
    dst = np.empty_like(src)
    cp = _best_seconds(lambda: np.copyto(dst, src), lambda: None, reps)
    return Peaks(device="cpu", matmul_library=library, matmul_dtype="fp32", matmul_size=matmul_size,
                 matmul_tflops=2 * matmul_size**3 / times[library] / 1e12, copy_bytes=src.nbytes,
                 copy_gbps=2 * src.nbytes / cp / 1e9)


def _peaks_cuda(device: str, dtype: str, matmul_size: int, copy_bytes: int, reps: int) -> Peaks:
    import torch

    from ..models.checkpoint import DTYPES

    dev = torch.device(device)
    g = torch.Generator(device=dev).manual_seed(0)
    a = torch.randn(matmul_size, matmul_size, device=dev, dtype=DTYPES[dtype], generator=g)
    b = torch.randn(matmul_size, matmul_size, device=dev, dtype=DTYPES[dtype], generator=g)
    out = torch.empty_like(a)
    sync = lambda: torch.cuda.synchronize(dev)  # noqa: E731
    mm = _best_seconds(lambda: torch.matmul(a, b, out=out), sync, reps)
    src = torch.full((copy_bytes // 4,), 1.5, device=dev)
    dst = torch.empty_like(src)
    cp = _best_seconds(lambda: dst.copy_(src), sync, reps)
    return Peaks(device=device, matmul_library=f"torch {torch.__version__} (cuBLAS)", matmul_dtype=dtype,
                 matmul_size=matmul_size, matmul_tflops=2 * matmul_size**3 / mm / 1e12,
                 copy_bytes=src.numel() * 4, copy_gbps=2 * src.numel() * 4 / cp / 1e9)


def measure_peaks(device: str = "cpu", dtype: str = "fp32", reps: int = 5) -> Peaks:
    """Matmul peak and copy bandwidth of `device`, in the benchmark's dtype on CUDA (fp32 on CPU).

    Sizes: 8192^3 and 1 GiB on a GPU (large enough to saturate an H100), 1024^3 and 128 MiB on a
    CPU (past the last-level cache, yet well under a second on two cores).
    """
    if device.startswith("cuda"):
        return _peaks_cuda(device, dtype, 8192, 1 << 30, reps)
    return _peaks_cpu(1024, 128 << 20, reps)

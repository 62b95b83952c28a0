"""Launch an AOT-compiled temporal-attention cubin with cuda-python alone (no torch, no Triton).

The TensorRT plugin's enqueue calls `launch_temporal_attention` with TensorRT's device pointers
and stream; a module is loaded once per CUDA context, on first use in that context.
"""
from __future__ import annotations

import ctypes
import math

from ..errors import BackendUnavailableError
from .aot import TRITON_SCRATCH_PARAMS, CompiledKernel, select

# Above 48 KiB a kernel must opt in to dynamic shared memory (CUDA programming guide).
_DEFAULT_SHARED_LIMIT = 48 * 1024


def _driver():
    try:
        from cuda.bindings import driver
    except ImportError as e:
        raise BackendUnavailableError(f"the temporal-attention plugin needs cuda-python ({e}); `pip install cuda-python`") from e
    return driver


def _check(result, call: str):
    """cuda-python returns (CUresult, *values); raise on error, return the values."""
    err, *values = result
    if int(err) != 0:
        raise BackendUnavailableError(f"CUDA driver call {call} failed: {err!r}")
    return values[0] if len(values) == 1 else values


def current_arch() -> int:
    """Compute capability (10 * major + minor) of the device of the current CUDA context."""
    cu = _driver()
    dev = _check(cu.cuCtxGetDevice(), "cuCtxGetDevice")
    attr = cu.CUdevice_attribute
    major = _check(cu.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev), "cuDeviceGetAttribute")
    minor = _check(cu.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev), "cuDeviceGetAttribute")
    return 10 * major + minor


class CubinFunction:
    """One kernel of one cubin, loaded lazily into each CUDA context it is launched in."""

    def __init__(self, kernel: CompiledKernel):
        self.kernel = kernel
        self._functions: dict[int, object] = {}  # context handle -> CUfunction
        self._modules: list[object] = []

    def _function(self):
        cu = _driver()
        ctx = int(_check(cu.cuCtxGetCurrent(), "cuCtxGetCurrent"))
        if ctx == 0:
            raise BackendUnavailableError("no current CUDA context to launch the temporal-attention kernel in")
        if ctx not in self._functions:
            module = _check(cu.cuModuleLoadData(self.kernel.cubin), "cuModuleLoadData")
            fn = _check(cu.cuModuleGetFunction(module, self.kernel.name.encode()), "cuModuleGetFunction")
            if self.kernel.shared > _DEFAULT_SHARED_LIMIT:
                attr = cu.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
                _check(cu.cuFuncSetAttribute(fn, attr, self.kernel.shared), "cuFuncSetAttribute")
            self._modules.append(module)
            self._functions[ctx] = fn
        return self._functions[ctx]

    def launch(self, grid: tuple[int, int, int], params: tuple[tuple, tuple], stream: int) -> None:
        """params: (values, ctypes types) of every kernel parameter, as `kernel_params` makes."""
        cu = _driver()
        _check(
            cu.cuLaunchKernel(
                self._function(), *grid, 32 * self.kernel.num_warps, 1, 1, self.kernel.shared,
                cu.CUstream(stream), params, 0,
            ),
            "cuLaunchKernel",
        )


def contiguous_strides(shape: tuple[int, ...]) -> list[int]:
    strides, acc = [], 1
    for size in reversed(shape):
        strides.append(acc)
        acc *= size
    return strides[::-1]


def kernel_params(
    kernel: CompiledKernel, q: int, k: int, v: int, o: int, shape: tuple[int, int, int, int]
) -> tuple[tuple, tuple]:
    """(values, ctypes types) in the order of `_temporal_attention_fwd`'s runtime arguments,
    then Triton's two scratch pointers (NULL). q, k, v, o: device pointers to contiguous
    (B*T, H*W, heads, d) tensors."""
    bt, n, heads, d = shape
    i32, ptr = ctypes.c_int32, ctypes.c_void_p
    strides = contiguous_strides(shape)
    params = [(p, ptr) for p in (q, k, v, o)]
    params += [(s, i32) for s in strides] * 4  # q, k, v and o share the contiguous layout
    params += [(x, i32) for x in (n, heads, kernel.frames, d)]
    params.append((kernel.qk_scale, ctypes.c_float))
    params += [(0, ptr)] * TRITON_SCRATCH_PARAMS
    values, types = zip(*params)
    return values, types


def launch_temporal_attention(
    fn: CubinFunction, q: int, k: int, v: int, o: int, shape: tuple[int, int, int, int], stream: int
) -> None:
    """o = temporal attention of q, k, v over fn's frame count, launched on `stream` (a
    CUstream handle as int); pointers as in `kernel_params`."""
    bt, n, heads, d = shape
    if d != fn.kernel.head_dim or bt % fn.kernel.frames:
        raise ValueError(f"shape {shape} does not fit a kernel for {fn.kernel.frames} frames, head_dim {fn.kernel.head_dim}")
    grid = (math.ceil(n / fn.kernel.block_n), (bt // fn.kernel.frames) * heads, 1)
    fn.launch(grid, kernel_params(fn.kernel, q, k, v, o, shape), stream)


def function_for_device(kernels: list[CompiledKernel], dtype: str, head_dim: int) -> CubinFunction:
    """The kernel matching the current context's GPU (raises StaleEngineError when none does)."""
    return CubinFunction(select(kernels, current_arch(), dtype, head_dim))

"""Which pyproject extra installs a missing module, so the CLI can say the command that fixes it.

Heavy dependencies live in extras (pyproject.toml); a command whose extra is absent would
otherwise end in `ModuleNotFoundError: onnx_ir` from deep inside an exporter. Keys are import
names, including the ones an extra's packages pull in (onnx_ir comes with onnxscript).
"""
from __future__ import annotations

from .contract.backends import INFO

EXTRA_OF_MODULE = {
    "torch": "torch",
    **dict.fromkeys(("onnx", "onnxruntime", "onnxslim", "onnx_graphsurgeon", "onnxscript", "onnx_ir"), "onnx"),
    **dict.fromkeys(("tensorrt_rtx", "cuda"), "trt-rtx"),
    "triton": "kernels",
    **dict.fromkeys(("warp", "trimesh", "xatlas", "scipy", "skimage"), "mesh"),
    "matplotlib": "bench",
    **dict.fromkeys(("modelopt", "polygraphy", "onnxconverter_common", "lief", "cppimport"), "quant"),
}


def missing_module_hint(exc: ModuleNotFoundError) -> str | None:
    """One line naming the extra (and its install command) for a missing module; None when the
    module belongs to no extra (then it is a bug or a broken environment, not a missing extra)."""
    top = (exc.name or "").split(".")[0]
    if top == "tensorrt":
        return f"full TensorRT is not installed (no module {exc.name!r}): {INFO['tensorrt'].install}"
    extra = EXTRA_OF_MODULE.get(top)
    if extra is None:
        return None
    return (f"this needs the {extra} extra, which is not installed (no module {exc.name!r}): "
            f"pip install -e \".[{extra}]\" in the sv3d-trt checkout, or pip install \"sv3d-trt[{extra}]\"")

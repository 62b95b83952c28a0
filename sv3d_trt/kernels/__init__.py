"""Fused kernels. `temporal_attention(q, k, v, frames, impl="auto")` is the model-facing entry.

Loaded lazily (PEP 562): the TensorRT plugin path (`trt_plugin`, `launch`, `aot`) imports this
package in processes that must not import torch.
"""


def __getattr__(name):
    if name == "temporal_attention":
        from .torch_op import temporal_attention

        return temporal_attention
    raise AttributeError(f"module 'sv3d_trt.kernels' has no attribute {name!r}")

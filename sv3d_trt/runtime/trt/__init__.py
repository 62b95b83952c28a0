"""`tensorrt` / `tensorrt-rtx`: the engines of `sv3d-trt build`, run with TensorRT + cuda-python + numpy.

No torch anywhere on this path. Loading, in order:

1. manifest.json is checked before any engine is read (checks.py): TensorRT flavour and
   version, this GPU's architecture among the build targets, the SV3D config/variant, file
   sizes (StaleEngineError with the exact rebuild command otherwise).
2. The buffer plan (plan.py) comes from the manifest's IO lists; every buffer is allocated
   once and reused by every request; host staging is pinned (buffers.py).
3. Engines are deserialized (after registering the TemporalAttention plugin creator when the
   engines carry plugin layers) and each gets an execution context sharing one scratch
   allocation; TensorRT-RTX contexts share one runtime cache (engines.py).

Per request: encode (clip + vae_encoder), context once per generation into the buffers the
step reads, then the denoise loop replayed from a CUDA graph captured once per step count:
each captured step reads its latent and its sigma pair through pointer offsets into device
arrays, so the loop needs no host work and no sync (loop.py). The VAE decodes in the engine's
chunk size; a second stream copies chunk k to pinned memory while chunk k + 1 decodes (decode.py).
"""
from .backend import TensorRTBackend, TensorRTRTXBackend
from .checks import check_engine_files, check_engines, device_index

__all__ = ["TensorRTBackend", "TensorRTRTXBackend", "check_engine_files", "check_engines", "device_index"]

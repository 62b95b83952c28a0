"""VAE decode for the fast path: low precision on CUDA, chunked to a memory budget, checked.

The decoder's peak memory, not its time, breaks small cards (performance.md: 15.5 GB for 21
frames at once in fp16, 20.6 GB for the reference's fp32 chunks of 14). The chunk is the
caller's `decode_chunk`, lowered on CUDA to what the free memory holds; the result is checked
for NaN/inf (fp16 overflow shows up there first) once, after the last chunk.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import NumericsError
from ..models.config import SV3DConfig

# Peak decoder memory per frame / the bytes of its largest activation (ch * ch_mult[0] channels
# at full resolution): 15.5 GB / 21 frames / (128 * 576^2 * 2 B) = 8.7 on the H100 run of
# performance.md; 10 leaves headroom for the allocator.
PEAK_PER_LARGEST_ACTIVATION = 10
FREE_MEMORY_SHARE = 0.8


def bytes_per_frame(config: SV3DConfig, dtype: torch.dtype) -> int:
    """Estimated peak decoder memory of one frame."""
    vae = config.vae
    largest = vae.ch * vae.ch_mult[0] * config.image_size**2 * torch.finfo(dtype).bits // 8
    return PEAK_PER_LARGEST_ACTIVATION * largest


def fitting_chunk(config: SV3DConfig, dtype: torch.dtype, device: torch.device, requested: int) -> int:
    """`requested`, lowered on CUDA to the frames the free memory holds (at least 1)."""
    if requested < 1:
        raise ValueError(f"decode chunk must be >= 1, got {requested}")
    if device.type != "cuda":
        return requested
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, min(requested, int(FREE_MEMORY_SHARE * free) // bytes_per_frame(config, dtype)))


@torch.inference_mode()
def decode_latents(decoder: nn.Module, z: torch.Tensor, chunk: int) -> torch.Tensor:
    """z: (T, 4, h, w) (already divided by the VAE scale) -> frames (T, 3, H, W) float32, decoded
    `chunk` frames at a time in the decoder's dtype. Raises NumericsError on NaN/inf."""
    dtype = next(decoder.parameters()).dtype
    frames = torch.cat([decoder(z[i : i + chunk].to(dtype)).float() for i in range(0, z.shape[0], chunk)])
    if not bool(torch.isfinite(frames).all()):  # sync: once per decode
        raise NumericsError(f"the VAE decoder produced NaN/inf in {str(dtype).replace('torch.', '')}; "
                            "decode in fp32 (decode_dtype='fp32') or bf16")
    return frames

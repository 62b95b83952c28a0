"""Fused temporal self-attention: softmax attention across the T frames of each video at each
spatial location, read and written in the UNet's native token layout.

Every SpatialVideoTransformer regroups its tokens from (B*T, H*W, C) to (B*H*W, T, C) to attend
over the 21 frames, then regroups back (sv3d.md §1.5). At 72x72 that is 2*5184 sequences of 21
tokens per head, and the two transposes move more bytes than the attention computes. This kernel
gathers each (video, location, head) frame sequence straight from q, k, v of shape
(B*T, H*W, heads, d) with any strides (e.g. three views of one packed qkv projection), keeps the
whole T x T score tile on chip, and scatters the result back in place of the regrouping.

Math = `reference()`: softmax(q k^T / sqrt(d)) v over frames, no mask, no bias; softmax in fp32.

torch is imported inside the torch-facing functions only: the AOT compiler (`aot.py`, run by the
TensorRT plugin at engine build time) imports this kernel in processes that must stay torch-free.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import triton
import triton.language as tl

from ..errors import BackendUnavailableError

if TYPE_CHECKING:
    import torch

# tl.dot needs every tile dimension >= 16; 21 frames pad to 32.
MIN_TILE = 16
MAX_FRAMES = 128
MAX_HEAD_DIM = 256
LOG2E = 1.4426950408889634


@triton.jit
def _temporal_attention_fwd(
    Q, K, V, O,
    stride_qt, stride_qn, stride_qh, stride_qd,
    stride_kt, stride_kn, stride_kh, stride_kd,
    stride_vt, stride_vn, stride_vh, stride_vd,
    stride_ot, stride_on, stride_oh, stride_od,
    num_tokens, num_heads, frames, head_dim,
    qk_scale,  # 1/sqrt(d) * log2(e): softmax through exp2
    T_PAD: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    # One program: BLOCK_N spatial locations x all frames x one head of one video.
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // num_heads
    h = pid_bh % num_heads

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_t = tl.arange(0, T_PAD)
    offs_d = tl.arange(0, BLOCK_D)
    # Row of frame t of video b on the B*T axis; int64 so batch x frame x stride cannot overflow.
    rows = (b * frames + offs_t).to(tl.int64)
    n3 = offs_n[:, None, None]  # (BLOCK_N, 1, 1)
    r3 = rows[None, :, None]  # (1, T_PAD, 1)
    d3 = offs_d[None, None, :]  # (1, 1, BLOCK_D)
    io_mask = (n3 < num_tokens) & (offs_t[None, :, None] < frames) & (d3 < head_dim)

    # 1. gather the frame sequences (BLOCK_N, T_PAD, BLOCK_D); padded frames/dims read as 0
    q = tl.load(Q + r3 * stride_qt + n3 * stride_qn + h * stride_qh + d3 * stride_qd, mask=io_mask, other=0.0)
    k = tl.load(K + r3 * stride_kt + n3 * stride_kn + h * stride_kh + d3 * stride_kd, mask=io_mask, other=0.0)
    v = tl.load(V + r3 * stride_vt + n3 * stride_vn + h * stride_vh + d3 * stride_vd, mask=io_mask, other=0.0)
    q = q.to(DOT_DTYPE)  # no-op except where `config()` says otherwise
    k = k.to(DOT_DTYPE)
    v = v.to(DOT_DTYPE)

    # 2. scores s = q k^T for every location at once, fp32 accumulate: (BLOCK_N, T_PAD, T_PAD)
    s = tl.dot(q, tl.permute(k, (0, 2, 1)), input_precision=DOT_PRECISION)
    key_valid = offs_t[None, None, :] < frames
    s = tl.where(key_valid, s * qk_scale, float("-inf"))

    # 3. the whole row is on chip, so softmax is exact in one pass: m_i row max, l_i row sum.
    #    Padded query rows hold 0-scores over valid keys (finite) and are never stored.
    m_i = tl.max(s, 2)
    p = tl.exp2(s - m_i[:, :, None])
    l_i = tl.sum(p, 2)

    # 4. acc = p v with p in the input dtype (tensor cores for fp16/bf16), normalise after the dot
    acc = tl.dot(p.to(DOT_DTYPE), v, input_precision=DOT_PRECISION)  # (BLOCK_N, T_PAD, BLOCK_D)
    acc = acc / l_i[:, :, None]

    # 5. scatter back into the native layout
    tl.store(O + r3 * stride_ot + n3 * stride_on + h * stride_oh + d3 * stride_od,
             acc.to(O.dtype.element_ty), mask=io_mask)


def config(frames: int, head_dim: int, dtype: str, interpreted: bool = False) -> dict:
    """Constexprs and num_warps of one launch; shared by the host wrapper and the AOT compiler.

    Tiles are powers of two >= 16. BLOCK_N locations per program: about 256 head-dim elements
    per frame row (4 locations at d = 64) keeps q, k, v, scores and acc in registers on a GPU;
    the CPU interpreter pays per program, not per element, so it takes 64 locations.
    fp32 is the exact reference mode (IEEE dots, no TF32). Triton 3.8's interpreter multiplies
    bf16 tiles as raw integers, so interpreted bf16 dots run in fp32 (stated in the tests).
    """
    block_d = max(MIN_TILE, triton.next_power_of_2(head_dim))
    dot_dtype = {"fp16": tl.float16, "bf16": tl.bfloat16, "fp32": tl.float32}[dtype]
    if interpreted and dtype == "bf16":
        dot_dtype = tl.float32
    return dict(
        T_PAD=max(MIN_TILE, triton.next_power_of_2(frames)),
        BLOCK_N=64 if interpreted else max(1, 256 // block_d),
        BLOCK_D=block_d,
        DOT_DTYPE=dot_dtype,
        DOT_PRECISION="ieee" if dot_dtype == tl.float32 else "tf32",  # tf32 is ignored for 16-bit
        num_warps=4 if head_dim > 32 else 2,
    )


def qk_scale(head_dim: int) -> float:
    """1/sqrt(d) (SDPA's default, the reference's xformers default) times log2(e) for exp2."""
    return LOG2E / math.sqrt(head_dim)


def dtype_name(dtype: torch.dtype) -> str:
    import torch

    names = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}
    if dtype not in names:
        raise ValueError(f"temporal attention takes fp16, bf16 or fp32 tensors, got {dtype}")
    return names[dtype]


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, frames: int) -> None:
    if q.dim() != 4:
        raise ValueError(f"q must be (B*T, H*W, heads, head_dim), got shape {tuple(q.shape)}")
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k, v shapes differ: {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if not q.dtype == k.dtype == v.dtype:
        raise ValueError(f"q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v on different devices: {q.device}, {k.device}, {v.device}")
    if not 1 <= frames <= MAX_FRAMES or q.shape[0] % frames:
        raise ValueError(f"B*T = {q.shape[0]} is not a multiple of frames = {frames} (1..{MAX_FRAMES})")
    if q.shape[3] > MAX_HEAD_DIM:
        raise ValueError(f"head_dim {q.shape[3]} > {MAX_HEAD_DIM} does not fit one tile")


def interpreted() -> bool:
    """True when TRITON_INTERPRET=1 was set before Triton was imported: `@triton.jit` then
    built interpreter functions (ours and Triton's own standard library), which run on CPU
    tensors. Triton fixes this at import, so it cannot be switched per call."""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(_temporal_attention_fwd, InterpretedFunction)


def temporal_attention_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, frames: int) -> torch.Tensor:
    """Fused temporal attention. q, k, v: (B*T, H*W, heads, head_dim), any strides, one dtype
    (fp16, bf16 or fp32). Returns a new contiguous (B*T, H*W, heads, head_dim) tensor."""
    import torch

    _check(q, k, v, frames)
    on_interpreter = interpreted()
    if q.device.type != "cuda" and not on_interpreter:
        raise BackendUnavailableError(
            f"the Triton temporal-attention kernel needs CUDA tensors, got {q.device}; CPU tensors "
            "run on Triton's interpreter when TRITON_INTERPRET=1 is set before Triton is imported"
        )
    bt, n, heads, d = q.shape
    o = torch.empty(q.shape, dtype=q.dtype, device=q.device)  # (B*T, H*W, heads, d)
    cfg = config(frames, d, dtype_name(q.dtype), interpreted=on_interpreter)
    grid = (triton.cdiv(n, cfg["BLOCK_N"]), (bt // frames) * heads)
    _temporal_attention_fwd[grid](
        q, k, v, o,
        *q.stride(), *k.stride(), *v.stride(), *o.stride(),
        n, heads, frames, d,
        qk_scale(d),
        num_stages=1, **cfg,
    )
    return o


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, frames: int) -> torch.Tensor:
    """Plain PyTorch: regroup to frames-last, SDPA over T, regroup back (the reference's
    rearrange + attention). q, k, v: (B*T, H*W, heads, d) -> (B*T, H*W, heads, d).
    SDPA gets 4-D tensors: torch.onnx's SDPA translation takes no other rank."""
    import torch.nn.functional as F

    bt, n, heads, d = q.shape
    b = bt // frames

    def frames_last(x: torch.Tensor) -> torch.Tensor:
        x = x.unflatten(0, (b, frames)).permute(0, 2, 3, 1, 4)  # (B, H*W, heads, T, d)
        return x.reshape(b * n, heads, frames, d)  # (B*H*W, heads, T, d)

    o = F.scaled_dot_product_attention(frames_last(q), frames_last(k), frames_last(v))
    o = o.unflatten(0, (b, n)).permute(0, 3, 1, 2, 4)  # (B, T, H*W, heads, d)
    return o.reshape(bt, n, heads, d)  # (B*T, H*W, heads, d)

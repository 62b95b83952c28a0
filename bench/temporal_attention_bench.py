"""Fused temporal attention vs rearrange + scaled_dot_product_attention at each UNet level.

    python bench/temporal_attention_bench.py [--config full|tiny] [--dtype fp16|bf16|fp32] [--iters 50]

Per level (full config, CFG batch of 2 videos x 21 frames): H*W tokens, heads of 64, and for
each implementation the median time, achieved bandwidth and that bandwidth as a fraction of the
device's measured copy bandwidth (a same-size device-to-device copy).

Bytes moved by a perfect kernel = read q, k, v + write o = 4 * (B*T * H*W * C) * element size;
that is the bandwidth floor this op can reach. FLOPs = 4 * B * H*W * heads * T^2 * d
(q k^T and p v, 2 FLOPs per multiply-add), negligible here: the op is memory-bound.

Without a GPU only the PyTorch baseline runs (on CPU) and the kernel column says "no GPU".
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from sv3d_trt.kernels import temporal_attention
from sv3d_trt.kernels.temporal_attention_kernel import reference
from sv3d_trt.models.config import get_config

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def levels(cfg) -> list[tuple[str, int, int]]:
    """(name, H*W, heads) of each temporal-attention site size: attention levels + middle block."""
    u = cfg.unet
    out = []
    for i in u.attention_levels:
        side = cfg.latent_size // 2**i
        out.append((f"level {i} ({side}x{side})", side * side, u.model_channels * u.channel_mult[i] // u.num_head_channels))
    side = cfg.latent_size // 2 ** (len(u.channel_mult) - 1)
    out.append((f"middle ({side}x{side})", side * side, u.model_channels * u.channel_mult[-1] // u.num_head_channels))
    return out


def timed(fn, iters: int, device: torch.device) -> float:
    """Median seconds per call after warm-up (CUDA events on GPU, wall clock on CPU)."""
    for _ in range(3):
        fn()
    samples = []
    for _ in range(iters):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()  # sync
            samples.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def copy_bandwidth(nbytes: int, iters: int, device: torch.device) -> float:
    """Bytes/s of a device-to-device copy of `nbytes` (each byte read once and written once)."""
    src = torch.randn(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / timed(lambda: dst.copy_(src), iters, device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="full", choices=["full", "tiny"])
    ap.add_argument("--dtype", default="fp16", choices=list(DTYPES))
    ap.add_argument("--videos", type=int, default=2, help="videos per call (2 = the CFG batch)")
    ap.add_argument("--iters", type=int, default=50)
    args = ap.parse_args()

    cfg = get_config(args.config)
    gpu = torch.cuda.is_available()
    device = torch.device("cuda" if gpu else "cpu")
    dtype = DTYPES[args.dtype] if gpu else torch.float32  # CPU SDPA is fp32-native
    torch.manual_seed(0)
    frames, d = cfg.num_frames, cfg.unet.num_head_channels
    where = torch.cuda.get_device_name() if gpu else "CPU (no GPU: kernel not run, baseline only)"
    print(f"device: {where} | torch {torch.__version__} | dtype {str(dtype).split('.')[-1]} | "
          f"config {args.config} | {args.videos} videos x {frames} frames | head_dim {d} | median of {args.iters}")

    rows = []
    for name, tokens, heads in levels(cfg):
        bt, c = args.videos * frames, heads * d
        qkv = torch.randn(bt, tokens, 3 * c, device=device, dtype=dtype)  # packed projection output
        q, k, v = (x.unflatten(-1, (heads, d)) for x in qkv.chunk(3, dim=-1))  # (B*T, H*W, heads, d)
        nbytes = 4 * bt * tokens * c * qkv.element_size()
        flops = 4 * args.videos * tokens * heads * frames**2 * d
        copy_bw = copy_bandwidth(max(nbytes // 2, 1 << 20), args.iters, device)
        t_base = timed(lambda: reference(q, k, v, frames), args.iters, device)
        t_kernel = timed(lambda: temporal_attention(q, k, v, frames, impl="triton"), args.iters, device) if gpu else None
        rows.append((name, tokens, heads, nbytes, flops, copy_bw, t_base, t_kernel))

    print()
    print("| level | H*W | heads | MB moved (floor) | GFLOP | copy GB/s | rearrange+SDPA ms | GB/s | % copy "
          "| kernel ms | GB/s | % copy | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, tokens, heads, nbytes, flops, copy_bw, t_base, t_kernel in rows:
        base = f"{t_base * 1e3:.3f} | {nbytes / t_base / 1e9:.1f} | {100 * nbytes / t_base / copy_bw:.0f}%"
        if t_kernel is None:
            kern = "no GPU | — | — | —"
        else:
            kern = (f"{t_kernel * 1e3:.3f} | {nbytes / t_kernel / 1e9:.1f} | {100 * nbytes / t_kernel / copy_bw:.0f}% "
                    f"| {t_base / t_kernel:.2f}x")
        print(f"| {name} | {tokens} | {heads} | {nbytes / 1e6:.1f} | {flops / 1e9:.2f} | {copy_bw / 1e9:.1f} | {base} | {kern} |")


if __name__ == "__main__":
    main()

"""The Triton kernels of `sv3d_trt.kernels` at the UNet's own shapes, against their references.

For each attention level of the config (72x72, 36x36, 18x18 latents and the 9x9 middle block at
full size) and each 16-bit dtype: the kernel's output against its plain-torch `reference()` run
in fp32 on upcast inputs (relative L2 error), and its time against that reference run in the
kernel's dtype, which is the unfused torch path the kernel replaces (for temporal attention:
rearrange + SDPA + rearrange back). Inputs take the layouts the fast UNet feeds: q, k, v as
strided views of one packed qkv projection, channels-last activations, the temporal ResBlock's
(B, C, T, H, W) view. On a CPU the kernels run only on Triton's interpreter (TRITON_INTERPRET=1
set before the check starts), and are not timed against anything meaningful there.
"""
from __future__ import annotations

import torch

from sv3d_trt.bench.timing import CudaEventClock, WallClock, measure
from sv3d_trt.kernels import blend, geglu, group_norm, layer_norm
from sv3d_trt.kernels import temporal_attention_kernel as ta
from sv3d_trt.models.checkpoint import DTYPES

from .runner import Context, PartResult

# Relative L2 error of a kernel's output (in its dtype) against the fp32 reference: about the
# output's rounding (2^-11 fp16, 2^-8 bf16) with margin.
TOLERANCE = {"fp16": 2e-3, "bf16": 1.2e-2, "fp32": 1e-5}
EPS = 1e-5  # GroupNorm32's; LayerNorm's is the same in the UNet
# 2T x groups programs take the interpreter a minute; "group_norm temporal" runs the same kernel.
INTERPRETER_SKIPS = ("group_norm+silu",)


def enabled(ctx: Context) -> str | None:
    if ctx.cuda or ta.interpreted():
        return None
    return "the Triton kernels need CUDA (or TRITON_INTERPRET=1 set before the check starts, on a CPU)"


def levels(config) -> list[dict]:
    """Token grid, channels and heads at every attention level and the middle block."""
    u = config.unet
    out = []
    for i in (*u.attention_levels, len(u.channel_mult) - 1):
        channels = u.model_channels * u.channel_mult[i]
        side = config.latent_size // 2**i
        out.append({"side": side, "channels": channels, "heads": channels // u.num_head_channels})
    return out


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


def _cases(config, level: dict, dtype: torch.dtype, device: str, g: torch.Generator):
    """(kernel name, shape label, kernel fn, reference fn(upcast)) for one level and dtype."""
    n, s, c, heads = 2 * config.num_frames, level["side"], level["channels"], level["heads"]
    T, d = config.num_frames, config.unet.num_head_channels
    groups = config.unet.norm_groups

    def randn(*shape, scale=1.0):
        return scale * torch.randn(*shape, generator=g, device=device, dtype=torch.float32)

    def cl(x):  # (N, C, H, W) channels-last in dtype
        return x.to(dtype).contiguous(memory_format=torch.channels_last)

    qkv = randn(n, s * s, 3 * c).to(dtype)  # one packed projection: q, k, v are strided views
    q, k, v = (t.unflatten(-1, (heads, d)) for t in qkv.chunk(3, dim=-1))
    yield ("temporal_attention", f"q {tuple(q.shape)} packed",
           lambda: ta.temporal_attention_triton(q, k, v, T),
           lambda up: ta.reference(up(q), up(k), up(v), T))

    w, b = 1 + 0.1 * randn(c), 0.1 * randn(c)
    x = cl(randn(n, c, s, s))
    emb = randn(n, c, 1).to(dtype)
    yield ("group_norm+silu", f"x {tuple(x.shape)} NHWC, emb (N,C,1)",
           lambda: group_norm.group_norm_triton(x, w.to(dtype), b.to(dtype), groups, EPS, True, emb),
           lambda up: group_norm.reference(up(x), w, b, groups, EPS, True, up(emb)))
    video = x.view(n // T, T, c, s, s).transpose(1, 2)  # (B, C, T, H, W) view of channels-last frames
    temb = randn(n // T, c, T).to(dtype)
    yield ("group_norm temporal", f"x {tuple(video.shape)} view, emb (B,C,T)",
           lambda: group_norm.group_norm_triton(video, w.to(dtype), b.to(dtype), groups, EPS, True, temb),
           lambda up: group_norm.reference(up(video), w, b, groups, EPS, True, up(temb)))

    tokens = randn(n, s * s, c).to(dtype)
    yield ("layer_norm", f"x {tuple(tokens.shape)}",
           lambda: layer_norm.layer_norm_triton(tokens, w.to(dtype), b.to(dtype), EPS),
           lambda up: layer_norm.reference(up(tokens), w, b, EPS))

    h = randn(n * s * s, 8 * c).to(dtype)  # GEGLU projection output: [value | gate], inner 4C
    yield ("geglu", f"h {tuple(h.shape)}", lambda: geglu.geglu_triton(h), lambda up: geglu.reference(up(h)))

    spatial, temporal, residual = cl(randn(n, c, s, s)), cl(randn(n, c, s, s)), cl(randn(n, c, s, s))
    alpha = torch.sigmoid(randn(1))
    yield ("blend+residual", f"s {tuple(spatial.shape)} NHWC",
           lambda: blend.blend_triton(spatial, temporal, alpha.to(dtype), residual),
           lambda up: blend.reference(up(spatial), up(temporal), alpha, up(residual)))


def check_kernels(ctx: Context) -> PartResult:
    cfg, opts = ctx.config, ctx.options
    clock = CudaEventClock(torch.device(ctx.device)) if ctx.cuda else WallClock()
    g = torch.Generator(device=ctx.device).manual_seed(opts.seed)
    rows, problems = [], []
    dtypes, shapes = opts.kernel_dtypes, levels(cfg)
    if not ctx.cuda:  # Triton's interpreter pays per program: the smallest level, one dtype
        dtypes, shapes = dtypes[:1], shapes[-1:]
    for dtype_name in dtypes:
        dtype = DTYPES[dtype_name]
        for level in shapes:
            for name, shape, kernel, reference in _cases(cfg, level, dtype, ctx.device, g):
                if not ctx.cuda and name in INTERPRETER_SKIPS:
                    continue
                row = {"kernel": name, "dtype": dtype_name, "level": f"{level['side']}x{level['side']}", "shape": shape}
                try:
                    out = kernel()
                    expected = reference(lambda t: t.float())
                    row["rel_err"] = _rel(out.float(), expected)
                    row["finite"] = bool(torch.isfinite(out).all())
                    del expected
                    if ctx.cuda:  # the interpreter's times say nothing about the kernels
                        row["kernel_ms"] = 1e3 * measure(lambda i: kernel(), clock, 2, opts.kernel_iters).median
                        row["torch_ms"] = 1e3 * measure(lambda i: reference(lambda t: t), clock, 2,
                                                        opts.kernel_iters).median
                        row["speedup"] = row["torch_ms"] / row["kernel_ms"]
                    row["ok"] = row["finite"] and row["rel_err"] <= TOLERANCE[dtype_name]
                    if not row["ok"]:
                        problems.append(f"{name} {dtype_name} {row['level']}: rel err {row['rel_err']:.3g}")
                except Exception as e:  # noqa: BLE001 - one shape's failure must not hide the others
                    row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                    problems.append(f"{name} {dtype_name} {row['level']}: {row['error']}")
                rows.append(row)
            if ctx.cuda:
                torch.cuda.empty_cache()
    summary = f"{sum(bool(r.get('ok')) for r in rows)}/{len(rows)} within tolerance"
    ta_rows = [r for r in rows if r["kernel"] == "temporal_attention" and "speedup" in r]
    if ta_rows:
        top = ta_rows[0]
        summary += f"; temporal attention {top['level']} {top['dtype']}: {top['kernel_ms']:.2f} ms vs SDPA path " \
                   f"{top['torch_ms']:.2f} ms ({top['speedup']:.1f}x)"
    return PartResult(summary, {"tolerance": TOLERANCE, "tables": {"kernels": rows}}, problems)

"""The UNet and VAE parts of the check, at full size on the device, through the public backends.

`build` makes the random fp32 UNet and VAE decoder once; each step part then builds its backend
from them (`torch-eager` uses them as they are, the reference recipe: fp32 weights under fp16
autocast; `torch-fast` gets an fp16 or bf16 copy) and times one CFG step (2T frames) with CUDA
events after warm-up, rotating through the input buffers. Every step part also keeps its
output on the first input, so `numerics` compares all of them with one fp32 step (TF32 off)
on the same weights and inputs.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import replace

import numpy as np
import torch

from sv3d_trt.bench.flops import reference_flops
from sv3d_trt.bench.timing import clock_for, measure
from sv3d_trt.models.checkpoint import SV3DModels
from sv3d_trt.runtime.backend import backend_class
from sv3d_trt.sampler import edm_sigmas

from . import kernel_profile
from .fullsize import (
    CheckInputs,
    cast_copy,
    exact_fp32,
    gb,
    memory_scope,
    own_peak,
    random_module,
    rate,
    rel_err,
    tensor_bytes,
    untouched_tensors,
)
from .runner import Context, PartResult

# Gates on the relative error of the step's update (x_next - x) against the fp32 step: loose
# enough for 16-bit rounding through 1.5 B random weights, tight enough to catch a wrong kernel
# (which lands near 1). To be tightened from the first GPU run's numbers.
UPDATE_TOLERANCE = {"fp32": 1e-4, "fp16": 3e-2, "bf16": 1e-1}
# Graph replay runs the same modules on the same inputs as the eager loop, so the latents should
# be bit-equal (reported as such); cuBLAS may pick other algorithms under capture, which moves
# fp16 results by rounding. A stale or reused buffer moves them by O(1): that is what fails.
LOOP_TOLERANCE = 1e-3


def low_precision(ctx: Context) -> str:
    """The reference recipe's compute dtype: fp16 on CUDA, fp32 on a CPU (no fast fp16 there)."""
    return "fp16" if ctx.cuda else "fp32"


def _sync(ctx: Context) -> None:
    if ctx.cuda:
        torch.cuda.synchronize()


def build(ctx: Context) -> PartResult:
    cfg, opts = ctx.config, ctx.options
    t0 = time.perf_counter()
    unet = random_module("unet", cfg, ctx.device, opts.seed)
    decoder = random_module("vae_decoder", cfg, ctx.device, opts.seed + 1)
    _sync(ctx)
    build_s = time.perf_counter() - t0
    bad = untouched_tensors(unet) + untouched_tensors(decoder)
    t0 = time.perf_counter()
    flops = reference_flops(cfg, opts.steps)
    flops_s = time.perf_counter() - t0
    ctx.state.update(unet=unet, decoder=decoder, flops=flops,
                     inputs=CheckInputs.draw(cfg, opts.steps, opts.rotate, opts.seed))
    params = sum(p.numel() for p in unet.parameters())
    data = {"unet_parameters": params, "unet_bytes": tensor_bytes(unet), "decoder_bytes": tensor_bytes(decoder),
            "unet_tensors": len(unet.state_dict()), "build_seconds": build_s, "flops_count_seconds": flops_s,
            "flops": flops}
    summary = (f"UNet {params / 1e9:.2f} B params fp32 ({gb(data['unet_bytes'])}) + VAE decoder random on "
               f"{ctx.device} in {build_s:.1f} s; step {flops['step'] / 1e9:.0f} GFLOP (folded "
               f"{flops['step_folded'] / 1e9:.0f})")
    return PartResult(summary, data, [f"{len(bad)} tensors not randomised: {bad[:5]}"] if bad else [])


def eager_backend(ctx: Context):
    """`torch-eager` over the fp32 networks: the reference recipe (fp16 autocast on CUDA)."""
    if "eager" not in ctx.state:
        models = SV3DModels(ctx.config, unet=ctx.state["unet"], vae_decoder=ctx.state["decoder"])
        ctx.state["eager"] = backend_class("torch-eager")(
            models, device=ctx.device, dtype=low_precision(ctx), autocast=ctx.cuda)
    return ctx.state["eager"]


def _timed_steps(ctx: Context, label: str, backend, dtype: str) -> dict:
    """First call (capture / compile / autotune) timed alone, then warm-up and the measured calls."""
    inputs, opts = ctx.state["inputs"], ctx.options
    state = backend.prepare(inputs.cond, inputs.vector, inputs.cfg_scales)
    xs = [backend.to_native(x) for x in inputs.step_x]

    def step(i: int):
        return backend.step(state, xs[i % len(xs)], inputs.sigma, inputs.sigma_next)

    t0 = time.perf_counter()
    out = backend.to_numpy(step(0))  # also the output compared by `numerics`
    first_s = time.perf_counter() - t0
    ctx.state.setdefault("step_outputs", {})[label] = (dtype, out)
    clock = clock_for(backend)
    stats = measure(step, clock, max(0, opts.warmup - 1), opts.iters)
    return {"first_call_seconds": first_s, "timing": stats.to_json(), "timing_method": clock.method,
            "finite": bool(np.isfinite(out).all()), "median_s": stats.median}


def _step_part(ctx: Context, label: str, dtype: str, make, weights_before: int = 0) -> PartResult:
    """Build a backend with `make()` and time its step, all inside one memory scope.
    weights_before: bytes of weights it uses that existed before the scope (counted in its peak)."""
    with memory_scope(ctx.cuda) as memory:
        backend = make()
        timing = _timed_steps(ctx, label, backend, dtype)
    flops, peaks = ctx.state["flops"], ctx.state.get("peaks", {})
    median = timing.pop("median_s")
    tflops = flops["step"] / median / 1e12
    peak = peaks.get(dtype) or peaks.get("fp32")
    own = own_peak(memory, weights_before)
    data = {"backend": backend.describe(), "dtype": dtype, **timing, "memory": memory, "own_peak_bytes": own,
            "model_tflops": tflops, "matmul_peak": peak.to_json() if peak else None,
            "fraction_of_matmul_peak": tflops / peak.matmul_tflops if peak else None}
    summary = f"{1e3 * median:.1f} ms/step, {rate(tflops * 1e12)}"
    if peak:
        summary += f" = {data['fraction_of_matmul_peak']:.0%} of the {peak.matmul_dtype} matmul peak"
    summary += f", peak {gb(own)}, first call {timing['first_call_seconds']:.1f} s"
    problems = [] if timing["finite"] else [f"{label} step output holds NaN/inf"]
    ctx.state.setdefault("backends", {})[label] = backend
    return PartResult(summary, data, problems)


def eager_step(ctx: Context) -> PartResult:
    return _step_part(ctx, "torch-eager", low_precision(ctx), lambda: eager_backend(ctx),
                      weights_before=tensor_bytes(ctx.state["unet"]))


def _fast_models(ctx: Context, dtype: str) -> SV3DModels:
    cfg = ctx.config
    unet = cast_copy(ctx.state["unet"], "unet", cfg, dtype)
    # The decoder in the UNet's dtype on CUDA, fp32 on a CPU: what TorchFastBackend.from_checkpoint loads.
    decoder = cast_copy(ctx.state["decoder"], "vae_decoder", cfg, dtype) if ctx.cuda else ctx.state["decoder"]
    return SV3DModels(cfg, unet=unet, vae_decoder=decoder)


def fast_step(dtype: str):
    def part(ctx: Context) -> PartResult:
        label = f"torch-fast-{dtype}"
        result = _step_part(ctx, label, dtype,
                            lambda: backend_class("torch-fast")(_fast_models(ctx, dtype), device=ctx.device, dtype=dtype))
        if dtype != "fp16":  # only the fp16 backend serves later parts: give its memory back
            ctx.state["backends"].pop(label)
        return result
    return part


def compile_step(ctx: Context) -> PartResult:
    """`torch-compile`: the reference's UNet in fp16 weights under inductor (first call compiles)."""
    dtype = low_precision(ctx)

    def make():
        models = SV3DModels(ctx.config, unet=cast_copy(ctx.state["unet"], "unet", ctx.config, dtype))
        return backend_class("torch-compile")(models, device=ctx.device, dtype=dtype)

    result = _step_part(ctx, "torch-compile", dtype, make)
    ctx.state["backends"].pop("torch-compile")
    return result


def numerics(ctx: Context) -> PartResult:
    """Every step output so far against an exact fp32 step on the same weights and input."""
    inputs = ctx.state["inputs"]
    ref = backend_class("torch-eager")(SV3DModels(ctx.config, unet=ctx.state["unet"]), device=ctx.device,
                                       dtype="fp32")
    state = ref.prepare(inputs.cond, inputs.vector, inputs.cfg_scales)
    with exact_fp32():
        expected = ref.to_numpy(ref.step(state, ref.to_native(inputs.step_x[0]), inputs.sigma, inputs.sigma_next))
    x = inputs.step_x[0]
    rows, problems = [], []
    for label, (dtype, out) in ctx.state.get("step_outputs", {}).items():
        finite = bool(np.isfinite(out).all())
        update_err = rel_err(out - x, expected - x) if finite else float("nan")
        ok = finite and update_err <= UPDATE_TOLERANCE[dtype]
        rows.append({"path": label, "dtype": dtype, "finite": finite, "rel_err_x_next": rel_err(out, expected),
                     "rel_err_update": update_err, "tolerance": UPDATE_TOLERANCE[dtype], "ok": ok})
        if not ok:
            problems.append(f"{label}: update rel err {update_err:.3g} > {UPDATE_TOLERANCE[dtype]:g}"
                            if finite else f"{label}: NaN/inf")
    if not rows:
        problems.append("no step part produced an output to compare")
    if not np.isfinite(expected).all():
        problems.append("the fp32 reference step itself is not finite")
    summary = ", ".join(f"{r['path']} {r['rel_err_update']:.2e}" for r in rows) + " (update rel err vs fp32)"
    return PartResult(summary, {"reference": "torch-eager fp32, TF32 off", "tables": {"step vs fp32": rows}},
                      problems)


@contextlib.contextmanager
def without_graph(backend):
    """The torch-fast backend with its CUDA graph off (same modules and kernels, launched eagerly)."""
    saved = backend.options
    backend.options = replace(saved, cuda_graph=False)
    try:
        yield backend
    finally:
        backend.options = saved


def fast_fp16(ctx: Context):
    return ctx.state["backends"]["torch-fast-fp16"]


def loop(ctx: Context) -> PartResult:
    """The product's 50-step loop (graph replay, schedule on the device), then graph vs eager."""
    fast, inputs, opts = fast_fp16(ctx), ctx.state["inputs"], ctx.options
    state = fast.prepare(inputs.cond, inputs.vector, inputs.cfg_scales)
    sigmas = edm_sigmas(opts.steps)
    n = len(inputs.loop_noise)
    finals = []

    def run(i: int) -> None:
        finals[:] = [fast.denoise(state, inputs.loop_noise[i % n], sigmas)]  # raises NumericsError on NaN/inf

    with memory_scope(ctx.cuda) as memory:
        stats = measure(run, clock_for(fast), 0, opts.loop_iters)  # the step part captured the graph
    data = {"steps": opts.steps, "timing": stats.to_json(), "ms_per_step": 1e3 * stats.median / opts.steps,
            "memory": memory, "cuda_graph": fast.options.cuda_graph, "final_finite": bool(np.isfinite(finals[0]).all())}
    summary = f"{opts.steps} steps {stats.median:.2f} s ({data['ms_per_step']:.1f} ms/step"
    problems = [] if data["final_finite"] else ["the final latent holds NaN/inf"]
    if not fast.options.cuda_graph:  # nothing to compare: this device runs the loop eagerly anyway
        return PartResult(summary + ", no CUDA graph on this device)", data, problems)
    short = edm_sigmas(opts.check_steps)
    graphed = fast.denoise(state, inputs.loop_noise[0], short)
    with without_graph(fast):
        eager = fast.denoise(state, inputs.loop_noise[0], short)
    diff, err = float(np.abs(graphed - eager).max()), rel_err(graphed, eager)
    data["graph_vs_eager"] = {"steps": opts.check_steps, "bit_equal": bool(np.array_equal(graphed, eager)),
                              "max_abs_diff": diff, "rel_err": err}
    if not err <= LOOP_TOLERANCE:
        problems.append(f"graph-replayed loop differs from the eager loop: rel err {err:.3g}")
    equal = "bit-equal" if data["graph_vs_eager"]["bit_equal"] else f"rel err {err:.2e}"
    summary += f", CUDA graph replay); graph vs eager over {opts.check_steps} steps: {equal}"
    return PartResult(summary, data, problems)


def decode(ctx: Context) -> PartResult:
    """All T frames: the reference (fp32 decoder, chunks of 14) and torch-fast's (its dtype, a
    chunk of T lowered to what the free memory holds), each with its peak memory."""
    from sv3d_trt.fast.decode import fitting_chunk

    inputs, opts, T = ctx.state["inputs"], ctx.options, ctx.config.num_frames
    paths = [("reference fp32, chunks of 14", eager_backend(ctx), 14, tensor_bytes(ctx.state["decoder"]))]
    fast = ctx.state.get("backends", {}).get("torch-fast-fp16")
    if fast is not None:
        decoder = fast.models.vae_decoder
        chunk = fitting_chunk(ctx.config, next(decoder.parameters()).dtype, fast.device, T)
        paths.append((f"torch-fast fp16, chunks of {chunk}", fast, T, tensor_bytes(decoder)))
    rows, frames, n = [], {}, len(inputs.decode_z)
    for label, backend, chunk, weights in paths:

        def run(i: int, b=backend, c=chunk, label=label) -> None:
            if i % n == 0:  # keep the frames of the first input for the comparison
                frames[label] = b.decode(inputs.decode_z[0], c)
            else:
                b.decode(inputs.decode_z[i % n], c)

        with memory_scope(ctx.cuda) as memory:
            stats = measure(run, clock_for(backend), min(opts.warmup, 1), opts.decode_iters)
        rows.append({"path": label, "median_ms": 1e3 * stats.median, "own_peak_bytes": own_peak(memory, weights),
                     "finite": bool(np.isfinite(frames[label]).all())})
    ref_frames = frames[paths[0][0]]
    for row in rows[1:]:
        row["rel_err_vs_reference"] = rel_err(frames[row["path"]], ref_frames)
    problems = [f"{r['path']}: NaN/inf frames" for r in rows if not r["finite"]]
    summary = "; ".join(f"{r['path']}: {r['median_ms']:.0f} ms, peak {gb(r['own_peak_bytes'])}" for r in rows)
    return PartResult(summary, {"frames": T, "tables": {"decode": rows}}, problems)


def end_to_end(ctx: Context) -> PartResult:
    """Image -> T uint8 frames through the public Pipeline on the torch-fast fp16 backend, with a
    random CLIP and VAE encoder (full size, fp32, as TorchFastBackend.from_checkpoint loads them)."""
    from sv3d_trt.preprocess import example_image_path
    from sv3d_trt.runtime.pipeline import Pipeline

    fast, opts, cfg = fast_fp16(ctx), ctx.options, ctx.config
    weights = tensor_bytes(fast.unet) + tensor_bytes(fast.models.vae_decoder)
    image, results = example_image_path("mug"), []

    def generate(i: int) -> None:
        results[:] = [pipe.generate(image, seed=opts.seed + i, steps=opts.steps, decode_chunk=cfg.num_frames)]

    with memory_scope(ctx.cuda) as memory:
        fast.models.clip = random_module("clip", cfg, ctx.device, opts.seed + 2)
        fast.models.vae_encoder = random_module("vae_encoder", cfg, ctx.device, opts.seed + 3)
        pipe = Pipeline(fast)
        stats = measure(generate, clock_for(fast), 0, opts.loop_iters)  # every stage is warm but the encoders
    frames, stages = results[0].frames, results[0].timings
    own = own_peak(memory, weights)
    data = {"steps": opts.steps, "decode_chunk": cfg.num_frames, "timing": stats.to_json(), "stage_seconds": stages,
            "frames_shape": list(frames.shape), "memory": memory, "own_peak_bytes": own}
    summary = (f"image -> {len(frames)} frames {stats.median:.2f} s ({opts.steps} steps; "
               + ", ".join(f"{k} {v:.2f} s" for k, v in stages.items()) + f"), peak {gb(own)}")
    expected = (cfg.num_frames, cfg.image_size, cfg.image_size, 3)
    problems = [] if frames.shape == expected else [f"frames {frames.shape}, expected {expected}"]
    return PartResult(summary, data, problems)


def profile(ctx: Context) -> PartResult:
    """Kernel time of one torch-fast fp16 step by category (eager launches: the graph's kernels)."""
    fast, inputs = fast_fp16(ctx), ctx.state["inputs"]
    state = fast.prepare(inputs.cond, inputs.vector, inputs.cfg_scales)
    x = fast.to_native(inputs.step_x[0])
    activities = [torch.profiler.ProfilerActivity.CPU]
    if ctx.cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    # No warm-up call: the step part ran these modules eagerly already (the graph's warm-up
    # calls), so every kernel is compiled and every cuDNN/cuBLAS choice made.
    with without_graph(fast):
        with torch.profiler.profile(activities=activities) as prof:
            fast.step(state, x, inputs.sigma, inputs.sigma_next)
            fast.synchronize()
    table = kernel_profile.summarize(prof.events(), ctx.cuda)
    rows, top = table.pop("by_category"), table.pop("top")
    summary = f"{table['total_ms']:.0f} ms of {table['source']}: " + ", ".join(
        f"{r['category']} {r['share']:.0%}" for r in sorted(rows, key=lambda r: -r["ms"]))
    problems = [] if rows else ["the profiler recorded no kernel events"]
    return PartResult(summary, {**table, "tables": {"by category": rows, "top kernels": top}}, problems)

#!/usr/bin/env python3
"""GPU bring-up check: every CUDA path of sv3d-trt in one command, inside a time budget.

Runs on a bare GPU machine from the working tree alone (no install, no network), writes
gpu_check.json and gpu_check.md under --out after every part, and prints a short summary table
last. `--device cpu --config tiny` is the dry run the test suite runs (tests/bench/test_gpu_check.py).
"""
from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Import the project from this working tree: nothing is pip-installed on the GPU machine. The
# script's own folder leaves sys.path (its module names must not shadow anything).
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)
sys.path.insert(0, str(ROOT))

from bench.gpu import env_parts, kernel_check, unet_parts  # noqa: E402
from bench.gpu.report import failures, summary_table, write_reports  # noqa: E402
from bench.gpu.runner import Context, Part, run_parts  # noqa: E402

PARTS = [
    Part("versions", 5, env_parts.versions, "python, torch, triton, numpy, CUDA, GPU, driver and package versions"),
    Part("peaks", 10, env_parts.peaks, "matmul peak (8192^3, fp16 and bf16) and copy bandwidth, this run"),
    Part("pytest_gpu", 100, env_parts.pytest_gpu, "pytest -m gpu on the files holding GPU tests (capped by "
         "--pytest-timeout; TensorRT tests deselected without TensorRT)",
         enabled=lambda ctx: "--no-pytest" if ctx.options.no_pytest else None),
    Part("build", 20, unet_parts.build, "full UNet + VAE decoder, every tensor random, made on the device; FLOPs"),
    Part("eager_step", 20, unet_parts.eager_step, "torch-eager CFG step (fp32 weights, fp16 autocast: the "
         "reference recipe), CUDA events", needs=("build",)),
    Part("fast_fp16", 45, unet_parts.fast_step("fp16"), "torch-fast fp16 step (graph capture, Triton compile "
         "in its first call)", needs=("build",)),
    Part("fast_bf16", 35, unet_parts.fast_step("bf16"), "torch-fast bf16 step", needs=("build",)),
    Part("numerics", 15, unet_parts.numerics, "every step above vs an fp32 step (TF32 off), same weights and "
         "input; NaN/inf", needs=("build",)),
    Part("loop", 40, unet_parts.loop, "the --steps loop as the product runs it (graph replay) + graph vs eager "
         "loop over --check-steps", needs=("fast_fp16",)),
    Part("decode", 20, unet_parts.decode, "VAE decode of all frames: reference fp32 chunks of 14, torch-fast "
         "fp16 chunked; peak memory", needs=("build",)),
    Part("end_to_end", 30, unet_parts.end_to_end, "image -> 21 frames through Pipeline.generate on torch-fast "
         "fp16 (random CLIP + VAE encoder added); peak memory", needs=("fast_fp16",)),
    Part("profile", 20, unet_parts.profile, "kernel time of one torch-fast fp16 step by performance.md category",
         needs=("fast_fp16",)),
    Part("kernels", 60, kernel_check.check_kernels, "Triton kernels at the UNet's shapes vs their references: "
         "error, time vs the unfused torch path", enabled=kernel_check.enabled),
    Part("compile", 300, unet_parts.compile_step, "torch-compile fp16 step (inductor; the first call compiles, "
         "about 3 min on an H100)", needs=("build",),
         enabled=lambda ctx: None if ctx.options.compile else "needs --compile"),
    Part("mesh", 120, env_parts.mesh, "mesh optimizer on CUDA: a procedural torus at mesh-eval's defaults",
         enabled=env_parts.mesh_enabled),
]
PART_NAMES = [p.name for p in PARTS]
DEFAULT_BUDGET_S = 450

COMMAND = ("mkdir -p $OUT/gpu && set -o pipefail && PYTHONUNBUFFERED=1 python3 bench/gpu/check.py --out $OUT/gpu "
           "2>&1 | tee $OUT/gpu/log.txt")

EPILOG = f"""\
On the GPU machine (the `run` tool; the working tree travels by itself, no install, no network):

  carry:     nothing (torch, triton, numpy, onnx, safetensors, click, rich, pillow, scipy, pytest
             are on that machine's image; the project is imported from the tree)
  command:   {COMMAND}
  timeout_s: 570
  files back: $OUT/gpu/gpu_check.json, gpu_check.md, log.txt, {env_parts.PYTEST_XML}, {env_parts.PYTEST_LOG}

The default --budget-s {DEFAULT_BUDGET_S} keeps the run inside 8 minutes on an H200: before each part the
check compares the time left with the part's estimate below and skips it (status skipped, reason
budget) when it no longer fits. Rerun only some parts with --only NAME,NAME.

Parts, in order, with their estimated cost on an H200 at full size:
{chr(10).join(f"  {p.name:<11} {p.estimate_s:>4.0f} s  {p.what}" for p in PARTS)}

The compile part (--compile) alone takes about 5 minutes with its first compile: run it in a second
command (--only versions,build,compile --no-pytest), not beside the rest.

The mesh part runs only where warp-lang imports, and the GPU image has no warp-lang, trimesh or
xatlas. warp-lang's wheel (149 MB) exceeds one command's 64 MiB, so it travels in three 50M pieces
over three quick commands on the warm machine (it stays warm 30 s after a call), joined in a fourth:
  here:  echo /.whl/ >> .git/info/exclude
         python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \\
             --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl warp-lang trimesh xatlas
         cd .whl && for f in warp_lang-*.whl; do split -b 50M "$f" "$f.part."; done && rm warp_lang-*.whl &&
             for i in 1 2 3; do mkdir -p ../.whl$i; echo /.whl$i/ >> ../.git/info/exclude; done &&
             mv *.part.aa ../.whl1 && mv *.part.ab ../.whl2 && mv *.part.ac ../.whl3
  there: carry [".whl1"]: mkdir -p /tmp/w && cp .whl1/* /tmp/w/     (then the same for .whl2, .whl3)
         carry [".whl"]:  for f in /tmp/w/*.part.aa; do cat "${{f%.part.aa}}".part.* > "${{f%.part.aa}}"; done &&
                          python3 -m pip install -q --no-index --no-deps --target /tmp/site /tmp/w/*.whl .whl/*.whl &&
                          mkdir -p $OUT/gpu && PYTHONPATH=/tmp/site python3 bench/gpu/check.py --out $OUT/gpu \\
                              --only versions,mesh 2>&1 | tee $OUT/gpu/log.txt
Worth it only after the main check ran and its findings are fixed, with 5 minutes of device time
left: four calls cost about 2 minutes, and the mesh's CUDA path is the least risky one (the same
Warp kernels compile for CPU and CUDA, and the CPU path is tested in CI).
"""


def _names(value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in PART_NAMES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown part(s) {', '.join(unknown)}; parts: {', '.join(PART_NAMES)}")
    return names


def _dtypes(value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names or any(n not in ("fp16", "bf16", "fp32") for n in names):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of fp16, bf16, fp32; got {value!r}")
    return names


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/gpu/check.py", description=__doc__.split("\n\n")[0],
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json / .md and the pytest report")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--config", choices=("full", "tiny"), default="full")
    p.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, help="skip parts that no longer fit")
    p.add_argument("--only", type=_names, default=None, help="comma-separated parts to run (the rest: skipped)")
    p.add_argument("--steps", type=int, default=50, help="denoise steps of the timed loop")
    p.add_argument("--check-steps", type=int, default=10, help="steps of the graph-vs-eager loop comparison")
    p.add_argument("--warmup", type=int, default=3, help="unmeasured calls before a step is timed")
    p.add_argument("--iters", type=int, default=5, help="measured step calls (median reported)")
    p.add_argument("--loop-iters", type=int, default=2)
    p.add_argument("--decode-iters", type=int, default=3)
    p.add_argument("--kernel-iters", type=int, default=10)
    p.add_argument("--kernel-dtypes", type=_dtypes, default=["fp16", "bf16"])
    p.add_argument("--rotate", type=int, default=3, help="distinct input buffers per timed stage")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compile", action="store_true", help="also time torch-compile (about 5 min)")
    p.add_argument("--no-pytest", action="store_true", help="skip the pytest -m gpu part")
    p.add_argument("--pytest-timeout", type=int, default=100, help="seconds for the whole pytest run")
    p.add_argument("--pytest-test-timeout", type=int, default=60, help="seconds per test (with pytest-timeout)")
    p.add_argument("--mesh-iters", type=int, default=100)
    args = p.parse_args(argv)
    for name, least in (("steps", 2), ("check_steps", 2), ("iters", 1), ("loop_iters", 1), ("decode_iters", 1),
                        ("kernel_iters", 1), ("rotate", 1), ("warmup", 0)):
        if getattr(args, name) < least:
            p.error(f"--{name.replace('_', '-')} must be >= {least}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from sv3d_trt.models.config import get_config

    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench/gpu/check.py: torch sees no CUDA device here; use --device cpu --config tiny for the dry run",
              file=sys.stderr)
        return 2
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"bench/gpu/check.py: cannot write to --out {args.out}: {e.strerror}", file=sys.stderr)
        return 2
    ctx = Context(device=args.device, config=get_config(args.config), options=args, out=args.out)
    start = time.perf_counter()
    header = {"created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "command": shlex.join([sys.executable, *sys.argv]), "device": args.device, "config": args.config,
              "budget_s": args.budget_s}
    results: dict[str, dict] = {}

    def on_result(name: str, record: dict) -> None:
        results[name] = record
        text = record.get("summary") or record.get("reason", "")
        print(f"[gpu-check] {name}: {record['status']} ({record['seconds']:.1f} s) {text}", flush=True)
        header.update(elapsed_s=time.perf_counter() - start, machine=ctx.state.get("machine"))
        write_reports(args.out, header, results)

    run_parts(PARTS, ctx, args.budget_s, on_result)
    print()
    for line in failures(results):
        print(line)
    print(f"\nGPU check: {header['elapsed_s']:.0f} s, reports in {args.out}")
    print(summary_table(results), flush=True)
    return 1 if any(r["status"] == "failed" for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

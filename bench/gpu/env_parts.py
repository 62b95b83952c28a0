"""The parts of the check around the models: what is installed, the device's ceilings, the
GPU-marked tests, and the mesh optimizer on CUDA when Warp is there."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from sv3d_trt.bench.machine import describe_machine, measure_peaks

from .runner import Context, PartResult
from .fullsize import rate

ROOT = Path(__file__).resolve().parents[2]
EXTRA_PACKAGES = ("triton", "cupy-cuda13x", "cupy-cuda12x", "cuda-bindings", "cuda-python", "safetensors", "onnx",
                  "onnxruntime", "onnxscript", "warp-lang", "trimesh", "xatlas", "nvidia-ml-py", "pytest-timeout")
# GPU tests that build TensorRT engines: deselected where no TensorRT is importable (they could
# only fail there, after a minute spent exporting their ONNX fixture).
NEEDS_TENSORRT = ("tests/runtime/test_trt_runner.py::test_engines_match_ort_on_gpu",)
PYTEST_XML = "pytest_gpu.xml"
PYTEST_LOG = "pytest_gpu.log"
# The torus scores 32.4 dB on a CPU (bench/RESULTS.md, "Mesh"); far below that, the CUDA path is broken.
MIN_MESH_PSNR = 25.0


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions(ctx: Context) -> PartResult:
    import torch

    from sv3d_trt.kernels import temporal_attention_kernel as ta

    machine = describe_machine(ctx.device)
    ctx.state["machine"] = machine
    found = {d: v for d in EXTRA_PACKAGES if (v := _version(d)) is not None}
    data = {"machine": machine, "packages": found, "python_executable": sys.executable,
            "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
            "triton_interpreter": ta.interpreted(),
            "project_root": str(ROOT), "project_imported_from": str(Path(ta.__file__).resolve().parents[2])}
    gpu = machine.get("gpu") or {}
    summary = (f"{gpu.get('name', 'no GPU')} (sm {gpu.get('compute_capability', '-')}, driver "
               f"{gpu.get('driver', '-')}); python {machine['python']}, torch {torch.__version__} "
               f"(CUDA {torch.version.cuda}), triton {found.get('triton', '-')}, numpy {machine['versions'].get('numpy')}")
    problems = []
    if ctx.cuda and not torch.cuda.is_available():
        problems.append("torch sees no CUDA device")
    return PartResult(summary, data, problems)


def peaks(ctx: Context) -> PartResult:
    """Matmul peak (fp16 and bf16 on CUDA, fp32 on a CPU) and copy bandwidth, this run."""
    dtypes = ("fp16", "bf16") if ctx.cuda else ("fp32",)
    measured = {dt: measure_peaks(ctx.device, dt) for dt in dtypes}
    ctx.state["peaks"] = measured
    first = measured[dtypes[0]]
    summary = ", ".join(f"{dt} matmul {rate(p.matmul_tflops * 1e12)}" for dt, p in measured.items())
    summary += f"; copy {first.copy_gbps:.0f} GB/s"
    return PartResult(summary, {dt: p.to_json() for dt, p in measured.items()})


def gpu_test_files(root: Path = ROOT) -> list[str]:
    """Test files that hold a GPU-marked test (found, not listed by hand: new ones join)."""
    return sorted(str(p.relative_to(root)) for p in (root / "tests").rglob("test_*.py")
                  if "pytest.mark.gpu" in p.read_text(errors="replace"))


def parse_junit(path: Path) -> list[dict]:
    """[{id, outcome (passed|failed|error|skipped), message}] of a pytest --junitxml file."""
    tests = []
    for case in ET.parse(path).getroot().iter("testcase"):
        if not case.get("name"):  # the test a Ctrl-C interrupted: pytest writes an empty record
            continue
        module = case.get("classname", "")
        test_id = f"{module.replace('.', '/')}.py::{case.get('name')}" if module else case.get("name", "")
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                message = (node.get("message") or (node.text or "")).strip().splitlines()
                message = message[0][:240] if message else ""
                break
        tests.append({"id": test_id, "outcome": outcome, "message": message})
    return tests


def pytest_gpu(ctx: Context) -> PartResult:
    """`pytest -m gpu` in a child process, against the working tree (PYTHONPATH, no install)."""
    opts = ctx.options
    args, deselected = ["-m", "gpu"], []
    if importlib.util.find_spec("tensorrt") is None and importlib.util.find_spec("tensorrt_rtx") is None:
        deselected = list(NEEDS_TENSORRT)
        args += [f"--deselect={t}" for t in deselected]
    result = run_pytest([*args, *gpu_test_files()], ROOT, ctx.out, opts.pytest_timeout, opts.pytest_test_timeout)
    if deselected:
        result.summary += f", {len(deselected)} deselected (no TensorRT)"
        result.data["deselected"] = deselected
    return result


def run_pytest(args: list[str], root: Path, out: Path, timeout: float, test_timeout: float) -> PartResult:
    """pytest `args` in `root` with a junit report under `out`; after `timeout` seconds it is
    stopped with Ctrl-C, so the tests that ran are still reported."""
    xml, log = out / PYTEST_XML, out / PYTEST_LOG
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}"]
    if importlib.util.find_spec("pytest_timeout") is not None:
        cmd.append(f"--timeout={test_timeout:g}")  # one hung test fails alone
    cmd += args
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(root), os.environ.get("PYTHONPATH"))))}
    xml.unlink(missing_ok=True)
    timed_out = False
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=f, stderr=subprocess.STDOUT)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.send_signal(signal.SIGINT)
            try:
                code = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
    tail = log.read_text(errors="replace").splitlines()[-15:]
    if not xml.exists():
        why = f"was stopped after {timeout:g} s" if timed_out else f"exited {code}"
        return PartResult("", {"command": cmd, "log_tail": tail}, [f"pytest {why} without a report"])
    tests = parse_junit(xml)
    counts = {k: sum(t["outcome"] == k for t in tests) for k in ("passed", "failed", "error", "skipped")}
    bad = [t["id"] for t in tests if t["outcome"] in ("failed", "error")]
    summary = ", ".join(f"{n} {k}" for k, n in counts.items())
    problems = [f"{len(bad)} GPU tests failed: {', '.join(bad[:8])}"] if bad else []
    if timed_out:
        summary += f" (stopped after {timeout:g} s)"
        problems.append(f"pytest was stopped after {timeout:g} s: the tests after the last one reported did not run")
    data = {"command": cmd, "exit_code": code, "timed_out": timed_out, "counts": counts, "tests": tests,
            "log_tail": tail}
    return PartResult(summary, data, problems)


def mesh_enabled(ctx: Context) -> str | None:
    if not ctx.cuda:
        return "the mesh part checks the Warp kernels on CUDA (the CPU path is covered by tests/mesh)"
    if importlib.util.find_spec("warp") is None:
        return "warp-lang is not importable here (see --help: how to carry it)"
    return None


def mesh(ctx: Context) -> PartResult:
    """Reconstruct a procedural torus on CUDA at mesh-eval's defaults (resolution 128, 100 iters)."""
    from dataclasses import replace

    from sv3d_trt.mesh import MeshConfig, procedural_shape, reconstruct_mesh
    from sv3d_trt.mesh.cameras import orbit_cameras, sv3d_orbit
    from sv3d_trt.mesh.evaluate import render_ground_truth
    from sv3d_trt.mesh.metrics import psnr

    resolution, iters = 128, ctx.options.mesh_iters
    cameras = orbit_cameras(*sv3d_orbit(elevation_deg=10.0), image_size=resolution)
    frames = render_ground_truth(procedural_shape("torus"), cameras, resolution)
    config = MeshConfig(resolution=resolution, texture_size=4 * resolution)
    config = replace(config, fit=replace(config.fit, iters=iters))
    with tempfile.TemporaryDirectory(prefix="sv3d-gpu-mesh-") as tmp:
        result = reconstruct_mesh(frames.numpy(), cameras, Path(tmp) / "torus.glb", config=config, device=ctx.device)
    score = psnr(result.renders.cpu(), frames.cpu())
    data = {"shape": "torus", "resolution": resolution, "iters": iters, "faces": int(len(result.faces)),
            "psnr": score, "stage_seconds": result.seconds}
    summary = f"torus on {ctx.device}: {sum(result.seconds.values()):.1f} s, {data['faces']} faces, PSNR {score:.1f} dB"
    return PartResult(summary, data, [] if score >= MIN_MESH_PSNR else [f"PSNR {score:.1f} dB < {MIN_MESH_PSNR} dB"])

"""`sv3d-trt` command line. Each command parses options, builds one config and calls one
public function; library errors (SV3DError) become one red line and exit code 1."""
from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from .errors import SV3DError
from .progress import Progress


def _friendly(fn):
    """Turn the package's typed errors into one clear line and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SV3DError as e:
            click.secho(f"error: {e}", fg="red", err=True)
            sys.exit(1)
        except ModuleNotFoundError as e:  # an extra that is not installed: name the command that adds it
            from .extras import missing_module_hint

            if (hint := missing_module_hint(e)) is None:
                raise
            click.secho(f"error: {hint}", fg="red", err=True)
            sys.exit(1)
        except KeyboardInterrupt:  # staged results (generate, run, build) keep the previous one
            click.secho("error: interrupted (Ctrl-C)", fg="red", err=True)
            sys.exit(130)

    return wrapper


def _device(ctx, param, value):
    """--device: cpu, cuda or cuda:N, checked before anything loads (presence: at load)."""
    from .devices import parse_device

    try:
        return None if value is None else parse_device(value)
    except SV3DError as e:
        raise click.BadParameter(str(e)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sv3d-trt")
def main():
    """sv3d-trt: fast, faithful SV3D inference (image -> 21-view orbit -> textured mesh)."""


# ---- foundation: checkpoints, generate, demo --------------------------------------------


@main.command("make-checkpoint")
@click.option("--config", "config_name", type=click.Choice(["tiny", "full"]), default="tiny", show_default=True)
@click.option("--variant", type=click.Choice(["sv3d_u", "sv3d_p"]), default="sv3d_p", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.argument("out", type=click.Path(dir_okay=False))
@_friendly
def make_checkpoint_cmd(config_name, variant, seed, out):
    """Write a random-init checkpoint with the official key layout (for tests and demos)."""
    from .models.checkpoint import checkpoint_layout, make_checkpoint
    from .models.config import get_config

    cfg = get_config(config_name, variant)
    total = sum(4 * max(1, __import__("math").prod(s)) for s in checkpoint_layout(cfg).values())
    with Progress() as progress, progress.stage(f"{config_name} {variant} -> {out}", total) as advance:
        make_checkpoint(out, cfg, variant=variant, seed=seed, progress=advance)
    click.echo(f"wrote {out} ({total / 1e6:.1f} MB, {config_name} {variant}, seed {seed})")


def _check_orbit(config, orbit, elevation, seed) -> None:
    """Reject bad camera options before any progress starts (generate resolves them again)."""
    from .cameras import resolve_orbit

    resolve_orbit(config.variant, orbit, elevation_deg=elevation, num_frames=config.num_frames, seed=seed)


def _stages(progress, name, steps, tail="decode"):
    """on_step for one generation, which reports it as two stages: "encode, denoise" (counted in
    steps, from now) and `tail` (from the last step on)."""
    progress.report(f"encode, denoise {name}", 0, steps)

    def on_step(i):
        progress.report(f"encode, denoise {name}", i + 1, steps)
        if i + 1 == steps:
            progress.report(f"{tail} {name}", 0, None)

    return on_step


def _load_and_generate(checkpoint, image, out, seed, steps, orbit, elevation, decode_chunk, mask=None, rembg=False,
                       **backend):
    """generate and demo: check the cameras and --out, then load, then generate into a staged,
    locked --out with run.json (runtime/batch.py `BatchRunner.write`), one stage each."""
    from .models.checkpoint import inspect_checkpoint
    from .output_folder import check_destination
    from .runtime import Pipeline
    from .runtime.batch import BatchRunner, RunSettings

    _check_orbit(inspect_checkpoint(checkpoint), orbit, elevation, seed)
    check_destination(out)  # a file, read-only, someone else's folder: said now, not after the run
    settings = RunSettings(seed=seed, steps=steps, orbit=orbit, elevation=elevation, decode_chunk=decode_chunk,
                           mask=mask, rembg=rembg)
    with Progress() as progress:
        with progress.stage(f"load {checkpoint}"):
            pipe = Pipeline.from_checkpoint(checkpoint, **backend)
        with BatchRunner(pipe, settings, source=checkpoint) as runner:
            outcome = runner.write(image, Path(out), on_step=_stages(progress, Path(str(image)).name, steps),
                                   on_save=lambda: progress.report(f"save {out}", 0, None))
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in outcome.timings.items())
    click.echo(f"wrote {pipe.config.num_frames} frames, orbit.mp4, orbit.gif, cameras.json, run.json to {out} "
               f"({stages})")


@main.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False),
              help="sv3d_u.safetensors / sv3d_p.safetensors (or one from make-checkpoint)")
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--seed", type=int, default=23, show_default=True)
@click.option("--steps", type=click.IntRange(2, 1000), default=50, show_default=True)
@click.option("--orbit", default=None, help="static (default), dynamic, or a JSON file of 21 (elevation, azimuth) pairs; sv3d_p only")
@click.option("--elevation", type=float, default=None, help="degrees, sv3d_p static/dynamic orbits (default 10)")
@click.option("--mask", type=click.Path(exists=True, dir_okay=False), default=None, help="foreground mask for RGB inputs")
@click.option("--rembg", is_flag=True, help="remove the background with rembg (optional package)")
@click.option("--decode-chunk", type=click.IntRange(1, 21), default=14, show_default=True)
@click.option("--backend", default="torch-eager", show_default=True, help="torch-eager (alias torch), torch-compile, torch-fast")
@click.option("--device", default="cpu", show_default=True, callback=_device, help="cpu, cuda, cuda:1, ...")
@click.option("--dtype", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp32", show_default=True)
@_friendly
def generate(image, checkpoint, out, seed, steps, orbit, elevation, mask, rembg, decode_chunk, backend, device, dtype):
    """Generate a 21-view orbit of IMAGE with a PyTorch backend."""
    _load_and_generate(checkpoint, image, out, seed, steps, orbit, elevation, decode_chunk, mask=mask, rembg=rembg,
                       backend=backend, device=device, dtype=dtype)


@main.command()
@click.option("--out", default="sv3d_demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--steps", type=click.IntRange(2, 1000), default=50, show_default=True)
@click.option("--seed", type=int, default=23, show_default=True)
@_friendly
def demo(out, steps, seed):
    """End to end on this machine with no weights and no GPU: tiny random checkpoint ->
    bundled example image -> 21 frames, mp4, gif, cameras.json."""
    from .models.checkpoint import make_checkpoint
    from .preprocess import example_image_path

    out = Path(out)
    ckpt = out / "tiny_sv3d_p.safetensors"
    if not ckpt.exists():
        make_checkpoint(ckpt, "tiny", variant="sv3d_p", seed=0)
    click.echo(f"random tiny sv3d_p checkpoint: {ckpt} (the official key layout, random weights)")
    image = example_image_path("mug")
    _load_and_generate(ckpt, image, out / "orbit", seed, steps, None, None, 14)
    click.echo(f"\nThe frames in {out / 'orbit'} are noise because the demo's checkpoint is random; "
               "for real orbits, with the official sv3d_p.safetensors (a GPU for reasonable speed):\n"
               f"  sv3d-trt generate {image} --checkpoint sv3d_p.safetensors --device cuda --dtype fp16 --out out/")


# ---- export / build / verify -------------------------------------------------------------


@main.command()
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False),
              help="sv3d_u.safetensors / sv3d_p.safetensors (or one from make-checkpoint)")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp16", show_default=True,
              help="dtype of weights and activations baked into the graphs (fp32 islands where numerics need it)")
@click.option("--plugins", is_flag=True, help="temporal attention as sv3d_trt::TemporalAttention plugin nodes")
@click.option("--calibrate", is_flag=True,
              help="Also record the calibration set that `build --precision int8|fp8` needs: calib-seeds x "
                   "images seeded 50-step generations (fp32/fp16/bf16 engines never use it).")
@click.option("--calib-images", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder of images to calibrate on (default: the 2 bundled examples). Implies --calibrate.")
@click.option("--calib-seeds", type=click.IntRange(1, 100), default=2, show_default=True,
              help="Seeded generations per calibration image (with --calibrate).")
@click.option("--decode-chunk", type=click.IntRange(1, 21), default=7, show_default=True,
              help="frames per VAE decoder call (fixed in the graph)")
@click.option("--device", default="cpu", show_default=True,
              help="Device of the calibration generations (a full-size checkpoint needs cuda for them).")
@_friendly
def export(checkpoint, out_dir, precision, plugins, calibrate, calib_images, calib_seeds, decode_chunk, device):
    """Export the five fixed-shape ONNX graphs and export.json (with --calibrate, also the
    int8/fp8 calibration set)."""
    from functools import partial

    from .export.onnx_export import export_checkpoint
    from .runtime.calibration import calibration_images, record_calibration

    images = calibration_images(calib_images) if calibrate or calib_images else None
    with Progress() as progress:
        recorder = partial(record_calibration, checkpoint, images=images, seeds=range(calib_seeds), device=device,
                           progress=progress.report) if images else None
        info = export_checkpoint(checkpoint, out_dir, precision=precision, plugins=plugins, decode_chunk=decode_chunk,
                                 calibrate=recorder, progress=progress.report)
    for name, graph in info["graphs"].items():
        click.echo(f"{graph['file']}: {graph['nodes']} nodes, {graph['weight_bytes'] / 1e6:.1f} MB weights, "
                   f"{graph['export_seconds']:.1f} s")
    if recorder:
        c = info["calibration"]
        click.echo(f"{c['file']}: {c['samples']} steps from {len(c['generations'])} generations, {c['seconds']:.1f} s")
    click.echo(f"wrote {Path(out_dir) / 'export.json'} ({info['config']} {info['variant']} {precision})")


@main.command()
@click.option("--onnx", "onnx_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Directory written by `sv3d-trt export`.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Where <graph>.engine files and manifest.json go.")
@click.option("--backend", type=click.Choice(["tensorrt", "tensorrt-rtx"]), default=None,
              help="Default: full TensorRT if installed, else TensorRT-RTX.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16", "int8", "fp8"]), default=None,
              help="Default: the export's dtype. int8/fp8 quantize the denoise step from the export's calibration set.")
@click.option("--target", "targets", default=None,
              help="TensorRT-RTX architectures, comma-separated (e.g. sm89,sm120). Default: portable (sm80+).")
@click.option("--error-samples", type=int, default=4, show_default=True,
              help="Held-out steps on which an int8/fp8 step graph is compared with the export (0: skip).")
@_friendly
def build(onnx_dir, out_dir, backend, precision, targets, error_samples):
    """Build TensorRT / TensorRT-RTX engines from an ONNX export, with a manifest."""
    from .export.build import build_engines

    with Progress() as progress:
        manifest = build_engines(onnx_dir, out_dir, backend=backend, precision=precision,
                                 targets=targets.split(",") if targets else None, progress=progress,
                                 error_samples=error_samples)
    for graph, entry in manifest.engines.items():
        errors = entry.get("quantization", {}).get("step_errors", [])
        worst = f", max held-out step error {max(e['rel_error'] for e in errors):.2e}" if errors else ""
        click.echo(f"{graph}: {entry['precision']}, {entry['bytes'] / 1e6:.1f} MB, {entry['build_seconds']:.1f} s{worst}")
    click.echo(f"wrote {out_dir} ({manifest.backend} {manifest.builder_version}, {', '.join(manifest.targets)})")


@main.command()
@click.argument("engines", type=click.Path(exists=True, file_okay=False))
@click.option("--onnx", "onnx_dir", default=None, type=click.Path(exists=True, file_okay=False),
              help="Also re-hash the source graphs here (default: the recorded export directory, if present).")
@_friendly
def verify(engines, onnx_dir):
    """Re-check an engine directory against its manifest; exit 1 with the reason on mismatch."""
    from .contract.manifest import verify_engines

    manifest = verify_engines(engines, onnx_dir)
    click.echo(f"ok: {len(manifest.engines)} engines match {Path(engines) / 'manifest.json'} "
               f"({manifest.backend} {manifest.builder_version}, {manifest.precision.value}, "
               f"{', '.join(manifest.targets)})")



# ---- runtime ------------------------------------------------------------------------------


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--engines", type=click.Path(exists=True, file_okay=False), help="Engine directory from `sv3d-trt build`.")
@click.option("--onnx", "onnx_dir", type=click.Path(exists=True, file_okay=False), help="Export directory from `sv3d-trt export`.")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), help="A checkpoint (PyTorch backends).")
@click.option("--backend", default=None, help="Force a backend (default: chosen by what the directory holds).")
@click.option("--device", default=None, callback=_device, help="cpu, cuda, cuda:1 (default: the backend's own).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Each image goes to OUT/<image stem>/.")
@click.option("--seed", type=int, default=23, show_default=True)
@click.option("--steps", type=click.IntRange(2, 1000), default=50, show_default=True)
@click.option("--orbit", default=None, help="static (default), dynamic, or a JSON file of 21 (elevation, azimuth) pairs; sv3d_p only")
@click.option("--elevation", type=float, default=None, help="degrees, sv3d_p static/dynamic orbits (default 10)")
@click.option("--decode-chunk", type=click.IntRange(1, 21), default=14, show_default=True,
              help="Frames per VAE decode (PyTorch backends; exports fix theirs at export time).")
@click.option("--mesh", is_flag=True, help="Also reconstruct a textured mesh.glb from the frames.")
@click.option("--fp32-fallback", type=click.Path(exists=True, file_okay=False), default=None,
              help="An fp32 export to re-run an image with when its fp16 latent turns non-finite.")
@_friendly
def run(images, engines, onnx_dir, checkpoint, backend, device, out, seed, steps, orbit, elevation, decode_chunk,
        mesh, fp32_fallback):
    """Generate orbits for one or more IMAGEs from engines, an ONNX export or a checkpoint."""
    from .runtime import Pipeline
    from .runtime.batch import BatchRunner, RunSettings

    sources = [s for s in (engines, onnx_dir, checkpoint) if s]
    if len(sources) != 1:
        raise click.UsageError("give exactly one of --engines DIR, --onnx DIR, --checkpoint CKPT")
    pipe = Pipeline.from_artifacts(sources[0], backend=backend, device=device)
    try:
        _check_orbit(pipe.config, orbit, elevation, seed)
    except BaseException:
        pipe.close()  # the runner below owns it from then on
        raise
    fallback = (lambda: Pipeline.from_artifacts(fp32_fallback, backend="ort", device=device)) if fp32_fallback else None
    runner = BatchRunner(pipe, RunSettings(seed=seed, steps=steps, orbit=orbit, elevation=elevation,
                                           decode_chunk=decode_chunk, mesh=mesh), fallback=fallback, source=sources[0])
    click.echo(f"{pipe.backend.name} backend, {pipe.variant}, {len(images)} image(s) -> {out}")
    with runner, Progress() as progress:
        steppers = [_stages(progress, images[0], steps, tail="decode and save")]  # the images in order

        def done(o):
            progress.finish()
            progress.print(f"{'ok' if o.ok else 'FAILED'} {o.image} -> {o.out_dir}  "
                           + (", ".join(f"{k} {v:.2f}s" for k, v in o.timings.items()) if o.ok else o.error))
            if len(steppers) < len(images):
                steppers.append(_stages(progress, images[len(steppers)], steps, tail="decode and save"))

        outcomes = runner.run(list(images), out, on_done=done, on_step=lambda index, i: steppers[index](i))
    failures = [o for o in outcomes if not o.ok]
    if failures:
        lines = "\n".join(f"  {o.image}: {o.error}" for o in failures)
        raise SV3DError(f"{len(failures)} of {len(outcomes)} image(s) failed (the others are written):\n{lines}")



# ---- mesh ---------------------------------------------------------------------------------


@main.command("mesh")
@click.argument("frames_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--cameras", "cameras_path", type=click.Path(exists=True, dir_okay=False), default=None,
              show_default="FRAMES_DIR/cameras.json", help="cameras.json")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="mesh file: .glb or .obj")
@click.option("--quality", type=click.Choice(["draft", "default", "high"]), default="default", show_default=True,
              help="draft: a quick look; high: a finer mesh and a 2048 px texture, several times slower")
@click.option("--iters", type=click.IntRange(1), default=None, show_default="from --quality",
              help="planned optimisation steps (the fit may stop sooner once converged)")
@click.option("--resolution", type=click.IntRange(32), default=None, show_default="from --quality",
              help="final working resolution in pixels")
@click.option("--device", default="cpu", show_default=True, callback=_device, help="cpu or cuda[:N]")
@_friendly
def mesh_command(frames_dir, cameras_path, out, quality, iters, resolution, device):
    """Reconstruct a textured mesh from 21 orbit frames (frame_000.png ...) and their cameras.

    FRAMES_DIR may also be the folder `generate`, `run` or `demo` wrote, when it holds one orbit."""
    from .mesh import quality_config, reconstruct_mesh
    from .progress import Progress

    frames_dir = _orbit_folder(Path(frames_dir))
    cameras_path = cameras_path or str(Path(frames_dir) / "cameras.json")
    with Progress() as progress:
        result = reconstruct_mesh(frames_dir, cameras_path, out, iters=iters, resolution=resolution,
                                  device=device, progress=progress.report, config=quality_config(quality))
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in result.seconds.items())
    click.echo(f"wrote {', '.join(str(p) for p in result.files)} ({len(result.faces)} faces; {stages})")
    _write_viewer(Path(out).parent)  # the folder's viewer, now with the mesh


def _orbit_folder(folder: Path) -> Path:
    """The folder with the frames: `folder` itself, or its one subfolder holding an orbit (a result folder)."""
    if (folder / "frame_000.png").is_file():
        return folder
    orbits = sorted(p for p in folder.iterdir() if (p / "frame_000.png").is_file() and (p / "cameras.json").is_file())
    if len(orbits) == 1:
        click.echo(f"frames: {orbits[0]}")
        return orbits[0]
    if len(orbits) > 1:
        names = ", ".join(p.name for p in orbits)
        raise SV3DError(f"{folder} holds {len(orbits)} orbits ({names}); pass one of them as FRAMES_DIR")
    return folder  # reading the frames names what is missing


@main.command("mesh-eval")
@click.argument("mesh_file")
@click.option("--quality", type=click.Choice(["draft", "default", "high"]), default="default", show_default=True,
              help="the `sv3d-trt mesh` preset to score")
@click.option("--resolution", type=click.IntRange(32, 1024), default=None,
              help="frame and fit resolution  [default: the preset's]")
@click.option("--iters", type=click.IntRange(1, 10_000), default=None, help="planned steps  [default: the preset's]")
@click.option("--elevation", type=float, default=10.0, show_default=True, help="orbit elevation in degrees")
@click.option("--perturb", type=click.Choice(["none", "default", "strong"]), default="none", show_default=True,
              help="degrade the views like generated ones: exposure/colour drift, blur, noise, eroded masks, "
                   "cameras off by degrees")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of the perturbation")
@click.option("--device", default="cpu", show_default=True, callback=_device, help="where the reconstruction runs: cpu or cuda[:N]")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="write the scores here")
@_friendly
def mesh_eval_command(mesh_file, quality, resolution, iters, elevation, perturb, seed, device, json_out):
    """Render MESH_FILE (watertight OBJ/PLY/GLB/STL, or a shape name: sphere, torus, box, composite,
    textured_sphere) at the SV3D orbit, reconstruct it and print the scores as JSON."""
    import json
    from pathlib import Path

    from .fileio import write_json_atomic
    from .mesh import SHAPES, evaluate, procedural_shape
    from .mesh.pipeline import quality_config

    mesh = procedural_shape(mesh_file) if mesh_file in SHAPES and not Path(mesh_file).exists() else mesh_file
    scores = evaluate(mesh, resolution=resolution, iters=iters, elevation_deg=elevation, perturb=perturb, seed=seed,
                      config=quality_config(quality), device=device)
    if json_out:
        write_json_atomic(json_out, scores)
    click.echo(json.dumps(scores, indent=2))



# ---- bench --------------------------------------------------------------------------------


def _int_list(ctx, param, value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None


def _backend_list(ctx, param, value: str) -> tuple[str, ...]:
    from .contract.backends import canonical_backend

    try:
        return tuple(canonical_backend(v) for v in value.split(","))
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@main.command()
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Checkpoint to benchmark (or --config for a random one).")
@click.option("--config", "config_name", type=click.Choice(["tiny", "full"]), default=None,
              help="Benchmark a random checkpoint of this size, made in a temporary folder.")
@click.option("--variant", type=click.Choice(["sv3d_u", "sv3d_p"]), default="sv3d_p", show_default=True)
@click.option("--backends", default="torch-eager", show_default=True, callback=_backend_list,
              help="Comma-separated: torch-eager, torch-compile, torch-fast, ort, tensorrt, tensorrt-rtx.")
@click.option("--onnx", "onnx_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="`sv3d-trt export` directory (ort). Default: exported from the checkpoint into a temporary folder.")
@click.option("--engines", "engines_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="`sv3d-trt build` directory (tensorrt / tensorrt-rtx). Default: built into a temporary folder.")
@click.option("--steps", type=click.IntRange(2, 1000), default=50, show_default=True)
@click.option("--warmup", type=click.IntRange(0), default=3, show_default=True)
@click.option("--iters", type=click.IntRange(1), default=10, show_default=True, help="Measured calls per stage.")
@click.option("--loop-iters", type=click.IntRange(1), default=3, show_default=True,
              help="Measured runs of the whole denoise loop and of end to end.")
@click.option("--decode-chunks", default="1,7,14", show_default=True, callback=_int_list,
              help="VAE decode chunk sizes to time; the largest is used end to end.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, ...")
@click.option("--dtype", type=click.Choice(["fp32", "fp16", "bf16"]), default=None,
              help="UNet dtype of the torch backends. Default: fp16 on CUDA, fp32 on CPU.")
@click.option("--mesh", is_flag=True, help="Also time mesh reconstruction from the end-to-end frames.")
@click.option("--mesh-iters", type=click.IntRange(1), default=None, help="Mesh fit steps (default: the mesh default).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None)
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, help="Bar plot PNG.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False), default=None,
              help="The table as Markdown (for bench/RESULTS.md).")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), default=None,
              help="One self-contained HTML report: table, per-stage bars with the FLOP floor, machine.")
@_friendly
def bench(checkpoint, config_name, variant, backends, onnx_dir, engines_dir, steps, warmup, iters, loop_iters,
          decode_chunks, device, dtype, mesh, mesh_iters, json_path, plot_path, markdown_path, html_path):
    """Time every stage of every backend in one process, against the measured FLOP peak."""
    import tempfile

    from rich.console import Console

    from .bench import (BenchSpec, default_dtype, mesh_line, not_run_lines, render_table, run_bench, to_json,
                        to_markdown, write_html, write_json, write_plot)
    from .fileio import write_bytes_atomic
    from .models.checkpoint import make_checkpoint

    if (checkpoint is None) == (config_name is None):
        raise click.UsageError("give exactly one of --checkpoint and --config")
    with tempfile.TemporaryDirectory(prefix="sv3d-bench-") as tmp:
        if config_name is not None:
            checkpoint = make_checkpoint(Path(tmp) / f"{config_name}_{variant}.safetensors", config_name, variant,
                                         seed=0)
        spec = BenchSpec(checkpoint=checkpoint, backends=backends, device=device,
                         dtype=dtype or default_dtype(device), steps=steps, warmup=warmup, iters=iters,
                         loop_iters=loop_iters, decode_chunks=decode_chunks, onnx_dir=onnx_dir,
                         engines_dir=engines_dir, workdir=tmp, mesh=mesh,
                         mesh_iters=mesh_iters)
        result = run_bench(spec, on_backend=lambda b: click.echo(f"{b.name}: {b.status}", err=True))
    Console().print(render_table(result))
    if result.mesh is not None:
        click.echo(mesh_line(result))
    for line in not_run_lines(result):
        click.secho(line, fg="yellow")
    if json_path:
        write_json(result, json_path)
    if plot_path:
        write_plot(result, plot_path)
    if markdown_path:
        write_bytes_atomic(markdown_path, to_markdown(to_json(result)).encode())
    if html_path:
        write_html(result, html_path)


# ---- viewer -------------------------------------------------------------------------------


def _write_viewer(folder: Path) -> None:
    """(Re)write folder/index.html and name it; a foreign index.html there is left alone."""
    from .viewer import write_page

    page = write_page(folder)
    if page is not None:
        click.echo(f"viewer: {page}")


@main.command()
@click.argument("result_dir", type=click.Path(exists=True, file_okay=False))
@_friendly
def view(result_dir):
    """Refresh RESULT_DIR/index.html (orbit, cameras, mesh, run facts) and open it in a browser."""
    from .viewer import view as view_page

    page, opened = view_page(result_dir)
    click.echo(f"{'opened' if opened else 'open in a browser'}: {page.resolve().as_uri()}")


# ---- serve --------------------------------------------------------------------------------


@main.command("serve")
@click.option("--artifacts", type=click.Path(exists=True), default=None,
              help="Engine directory (`sv3d-trt build`) or ONNX export (`sv3d-trt export`).")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A checkpoint (PyTorch backends).")
@click.option("--backend", default=None, help="Force a backend (default: chosen by what the source holds).")
@click.option("--dtype", type=click.Choice(["fp32", "fp16", "bf16"]), default=None, help="PyTorch backends' UNet dtype.")
@click.option("--replicas", type=click.IntRange(1), default=1, show_default=True, help="Generator replicas (one GPU each).")
@click.option("--autoscale", default=None, metavar="MIN:MAX", help="Autoscale generator replicas instead of --replicas.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--max-queued", type=click.IntRange(0), default=16, show_default=True,
              help="Waiting jobs past which POST answers 429 with Retry-After.")
@click.option("--parallel", type=click.Choice(["none", "cfg"]), default="none", show_default=True,
              help="cfg: the two guidance halves on two workers (two GPUs of one node; torch-eager).")
@click.option("--results-dir", type=click.Path(file_okay=False), default=None,
              help="Where finished jobs' files are kept (default: a temporary folder).")
@click.option("--retention", type=click.IntRange(1), default=100, show_default=True, help="Finished jobs kept.")
@_friendly
def serve_command(artifacts, checkpoint, backend, dtype, replicas, autoscale, host, port, max_queued, parallel,
                  results_dir, retention):
    """Serve orbits and meshes over HTTP on Ray Serve (POST /v1/orbits; OpenAPI at /docs)."""
    from .serve import ServeConfig, parse_autoscale
    from .serve.app import serve_forever

    if (artifacts is None) == (checkpoint is None):
        raise click.UsageError("give exactly one of --artifacts DIR and --checkpoint CKPT")
    config = ServeConfig(source=artifacts or checkpoint, backend=backend, dtype=dtype, replicas=replicas,
                         autoscale=parse_autoscale(autoscale) if autoscale else None, host=host, port=port,
                         max_queued=max_queued, parallel=parallel, results_dir=results_dir, retention=retention)
    serve_forever(config, on_ready=lambda url: click.echo(f"serving on {url} (API docs: {url}/docs); Ctrl-C stops"))


if __name__ == "__main__":
    main()

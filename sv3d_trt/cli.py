"""`sv3d-trt` command line. Each command parses options, builds one config and calls one
public function; library errors (SV3DError) become one red line and exit code 1."""
from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from .errors import SV3DError


def _friendly(fn):
    """Turn the package's typed errors into one clear line and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SV3DError as e:
            click.secho(f"error: {e}", fg="red", err=True)
            sys.exit(1)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sv3d-trt")
def main():
    """sv3d-trt: fast, faithful SV3D inference (image -> 21-view orbit -> textured mesh)."""


# ---- foundation: checkpoints, generate, demo --------------------------------------------


def _progress_bar(total: int, description: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   transient=False)
    task = bar.add_task(description, total=total)
    return bar, (lambda n=1: bar.advance(task, n))


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
    bar, advance = _progress_bar(total, f"{config_name} {variant} -> {out}")
    with bar:
        make_checkpoint(out, cfg, variant=variant, seed=seed, progress=advance)
    click.echo(f"wrote {out} ({total / 1e6:.1f} MB, {config_name} {variant}, seed {seed})")


def _generate(pipe, image, out, seed, steps, orbit, elevation, decode_chunk, mask=None, rembg=False):
    bar, advance = _progress_bar(steps, f"denoise {Path(str(image)).name}")
    with bar:
        result = pipe.generate(image, orbit=orbit, elevation=elevation, seed=seed, steps=steps,
                               decode_chunk=decode_chunk, mask=mask, rembg=rembg, on_step=lambda i: advance())
    paths = result.save(out)
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items())
    click.echo(f"wrote {len(result.frames)} frames, orbit.mp4, orbit.gif, cameras.json to {out} ({stages})")
    return result, paths


@main.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False),
              help="sv3d_u.safetensors / sv3d_p.safetensors (or one from make-checkpoint)")
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--seed", type=int, default=23, show_default=True)
@click.option("--steps", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--orbit", default=None, help="static (default), dynamic, or a JSON file of 21 (elevation, azimuth) pairs; sv3d_p only")
@click.option("--elevation", type=float, default=None, help="degrees, sv3d_p static/dynamic orbits (default 10)")
@click.option("--mask", type=click.Path(exists=True, dir_okay=False), default=None, help="foreground mask for RGB inputs")
@click.option("--rembg", is_flag=True, help="remove the background with rembg (optional package)")
@click.option("--decode-chunk", type=click.IntRange(1, 21), default=14, show_default=True)
@click.option("--backend", default="torch-eager", show_default=True, help="torch-eager (alias torch), torch-compile, torch-fast")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, ...")
@click.option("--dtype", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp32", show_default=True)
@_friendly
def generate(image, checkpoint, out, seed, steps, orbit, elevation, mask, rembg, decode_chunk, backend, device, dtype):
    """Generate a 21-view orbit of IMAGE with a PyTorch backend."""
    from .runtime import Pipeline

    pipe = Pipeline.from_checkpoint(checkpoint, backend=backend, device=device, dtype=dtype)
    _generate(pipe, image, out, seed, steps, orbit, elevation, decode_chunk, mask=mask, rembg=rembg)


@main.command()
@click.option("--out", default="sv3d_demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--steps", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--seed", type=int, default=23, show_default=True)
@_friendly
def demo(out, steps, seed):
    """End to end on this machine with no weights and no GPU: tiny random checkpoint ->
    bundled example image -> 21 frames, mp4, gif, cameras.json."""
    from .models.checkpoint import make_checkpoint
    from .preprocess import example_image_path
    from .runtime import Pipeline

    out = Path(out)
    ckpt = out / "tiny_sv3d_p.safetensors"
    if not ckpt.exists():
        make_checkpoint(ckpt, "tiny", variant="sv3d_p", seed=0)
    click.echo(f"random tiny sv3d_p checkpoint: {ckpt} (real key layout, random weights: frames are noise-like)")
    image = example_image_path("mug")
    pipe = Pipeline.from_checkpoint(ckpt)
    _generate(pipe, image, out / "orbit", seed, steps, None, None, 14)
    click.echo("\nWith the real weights (needs a GPU for reasonable speed):\n"
               f"  sv3d-trt generate {image} --checkpoint sv3d_p.safetensors --device cuda --dtype fp16 --out out/")


# ---- export / build / verify -------------------------------------------------------------


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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .export.build import build_engines

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        transient=True)
    with progress:
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
    from .export.manifest import verify_engines

    manifest = verify_engines(engines, onnx_dir)
    click.echo(f"ok: {len(manifest.engines)} engines match {engines}/manifest.json "
               f"({manifest.backend} {manifest.builder_version}, {manifest.precision.value}, "
               f"{', '.join(manifest.targets)})")



# ---- runtime ------------------------------------------------------------------------------


# ---- mesh ---------------------------------------------------------------------------------


# ---- bench --------------------------------------------------------------------------------


if __name__ == "__main__":
    main()

"""The benchmark's outputs: JSON (the record), a rich table (the terminal), a bar plot, Markdown and
a self-contained HTML page.

Every stage figure is read against the floor: achieved TFLOP/s = the stage's reference FLOPs
(flops.py) / its median time, as a fraction of the matmul peak measured on the same device in
the same run (machine.py), and the speed-up over the `torch-eager` row of the same run.

JSON layout (`SCHEMA_VERSION` 1):

    {"schema": "sv3d-trt-bench", "schema_version": 1, "created": "...Z",
     "settings": {checkpoint, config, variant, backends, device, dtype, steps, warmup, iters,
                  loop_iters, decode_chunks, e2e_decode_chunk, rotate, seed, onnx_dir, engines_dir, mesh},
     "machine": {hostname, os, python, cpu, cpu_count, torch_threads, gpu, versions},
     "peaks": {device, matmul_dtype, matmul_size, matmul_tflops, copy_bytes, copy_gbps},
     "flops": {stage: reference FLOPs},
     "backends": [{"name", "status": ok|skipped|failed, "reason", "settings", "timing_method",
                   "load_seconds", "memory": {..._bytes}, "artifacts": {...} | null,
                   "stages": {stage: {median_ms, p10_ms, p90_ms, mean_ms, iters,
                                      [flops, achieved_tflops, peak_fraction], [speedup_vs_torch_eager]}}}],
     "mesh": {frames_from, device, faces, iters (null: default), seconds: {stage: s, total: s}} | null}
"""
from __future__ import annotations

import os
from dataclasses import asdict

from ..fileio import atomic_path, write_bytes_atomic, write_json_atomic
from .flops import stage_flops_key
from .harness import BackendResult, BenchResult
from .timing import Stats

SCHEMA = "sv3d-trt-bench"
SCHEMA_VERSION = 1
REFERENCE = "torch-eager"


def _reference_stages(result: BenchResult) -> dict[str, Stats]:
    for b in result.backends:
        if b.name == REFERENCE and b.status == "ok":
            return b.stages
    return {}


def stage_figures(result: BenchResult, backend: BackendResult, stage: str) -> dict:
    """Timing statistics of one stage plus its FLOP rate, peak fraction and speed-up."""
    stats = backend.stages[stage]
    out = stats.to_json()
    flops = result.flops.get(stage_flops_key(stage))
    if flops:
        out["flops"] = flops
        out["achieved_tflops"] = flops / stats.median / 1e12
        out["peak_fraction"] = out["achieved_tflops"] / result.peaks.matmul_tflops
    reference = _reference_stages(result).get(stage)
    if reference is not None and backend.name != REFERENCE:
        out["speedup_vs_torch_eager"] = reference.median / stats.median
    return out


def _settings(result: BenchResult) -> dict:
    spec = result.spec
    settings = {k: str(v) if isinstance(v, os.PathLike) else v for k, v in asdict(spec).items()}
    settings.update(config=result.config.name, variant=result.config.variant, backends=list(spec.backends),
                    decode_chunks=list(spec.decode_chunks), e2e_decode_chunk=spec.e2e_chunk)
    return settings


def to_json(result: BenchResult) -> dict:
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created": result.created,
        "settings": _settings(result),
        "machine": result.machine,
        "peaks": result.peaks.to_json(),
        "flops": result.flops,
        "backends": [
            {
                "name": b.name,
                "status": b.status,
                "reason": b.reason,
                "settings": b.settings,
                "timing_method": b.timing_method,
                "load_seconds": b.load_seconds,
                "memory": b.memory,
                "artifacts": b.artifacts,
                "stages": {stage: stage_figures(result, b, stage) for stage in b.stages},
            }
            for b in result.backends
        ],
        "mesh": result.mesh,
    }


def write_json(result: BenchResult, path: str | os.PathLike) -> None:
    write_json_atomic(path, to_json(result))


# ---------------------------------------------------------------------------------------
# Terminal


def format_seconds(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3g} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} µs"


def _stage_order(stage_names) -> list[str]:
    """Stage names in first-seen order over the backends' stage lists (or dicts)."""
    stages: list[str] = []
    for names in stage_names:
        stages += [s for s in names if s not in stages]
    return stages


def _cell(result: BenchResult, backend: BackendResult, stage: str) -> str:
    if stage not in backend.stages:
        return "-"
    fig = stage_figures(result, backend, stage)
    stats = backend.stages[stage]
    lines = [f"[bold]{format_seconds(stats.median)}[/]",
             f"[dim]{format_seconds(stats.p10)}–{format_seconds(stats.p90)}[/]"]
    rate = []
    if "achieved_tflops" in fig:
        rate.append(f"{fig['achieved_tflops']:.3g} TF/s {100 * fig['peak_fraction']:.0f}%")
    if "speedup_vs_torch_eager" in fig:
        rate.append(f"{fig['speedup_vs_torch_eager']:.3g}x")
    if rate:
        lines.append(" ".join(rate))
    return "\n".join(lines)


def _bytes(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**30:.2f} GiB"


def _host_peak(memory: dict) -> int | None:
    return memory.get("host_peak_rss_bytes", memory.get("host_process_peak_rss_bytes"))


def render_table(result: BenchResult):
    """A rich Table: one row per stage, one column per backend that ran."""
    from rich.table import Table

    peaks = result.peaks
    ran = [b for b in result.backends if b.status == "ok"]
    title = (f"sv3d-trt bench: {result.config.name} {result.config.variant}, {result.spec.steps} steps, "
             f"{result.spec.device} {result.spec.dtype}; peak {peaks.matmul_tflops:.3g} TFLOP/s "
             f"({peaks.matmul_dtype} matmul), copy {peaks.copy_gbps:.3g} GB/s")
    table = Table(title=title, show_lines=True)
    table.add_column("stage (FLOPs)")
    for b in ran:
        table.add_column(b.name, justify="right")
    for stage in _stage_order(b.stages for b in result.backends):
        flops = result.flops.get(stage_flops_key(stage))
        label = f"{stage}\n[dim]{flops / 1e9:.4g} GFLOP[/]" if flops else stage
        table.add_row(label, *(_cell(result, b, stage) for b in ran))
    table.add_row("load", *(format_seconds(b.load_seconds) for b in ran))
    table.add_row("peak host RSS", *(_bytes(_host_peak(b.memory)) for b in ran))
    if any("gpu_torch_peak_allocated_bytes" in b.memory or "gpu_device_peak_used_bytes" in b.memory for b in ran):
        table.add_row("peak GPU (torch / device)", *(
            f"{_bytes(b.memory.get('gpu_torch_peak_allocated_bytes'))} / "
            f"{_bytes(b.memory.get('gpu_device_peak_used_bytes'))}" for b in ran))
    return table


def not_run_lines(result: BenchResult) -> list[str]:
    """One line per backend that was skipped or failed, with the reason."""
    return [f"{b.name}: {b.status}: {b.reason}" for b in result.backends if b.status != "ok"]


def mesh_line(result: BenchResult) -> str | None:
    """The mesh stage on one line (it ran once, not per backend), or None if not asked."""
    return None if result.mesh is None else _mesh_text(result.mesh)


def _mesh_text(mesh: dict) -> str:
    parts = ", ".join(f"{k} {format_seconds(v)}" for k, v in mesh["seconds"].items() if k != "total")
    return (f"mesh from {mesh['frames_from']} frames on {mesh['device']}: {format_seconds(mesh['seconds']['total'])} "
            f"({parts}; {mesh['faces']} faces)")


def _figure_texts(fig: dict) -> list[str]:
    """A saved stage figure as text: median, p10–p90, then FLOP rate (% of peak) and speed-up when known."""
    texts = [format_seconds(fig["median_ms"] / 1e3),
             f"{format_seconds(fig['p10_ms'] / 1e3)}–{format_seconds(fig['p90_ms'] / 1e3)}"]
    if "achieved_tflops" in fig:
        tflops = fig["achieved_tflops"]
        rate = f"{tflops:.3g} TFLOP/s" if tflops >= 1 else f"{1e3 * tflops:.3g} GFLOP/s"
        texts.append(f"{rate} ({100 * fig['peak_fraction']:.0f} %)")
    if "speedup_vs_torch_eager" in fig:
        texts.append(f"{fig['speedup_vs_torch_eager']:.3g}x")
    return texts


def to_markdown(report: dict) -> str:
    """A saved JSON report as a Markdown table (for bench/RESULTS.md): median [p10–p90] per
    stage and backend, with TFLOP/s, fraction of the measured peak and speed-up."""
    ran = [b for b in report["backends"] if b["status"] == "ok"]
    stages = _stage_order(b["stages"] for b in ran)
    lines = ["| stage | GFLOP | " + " | ".join(b["name"] for b in ran) + " |",
             "|---|---|" + "---|" * len(ran)]
    for stage in stages:
        flops = report["flops"].get(stage_flops_key(stage))
        cells = []
        for b in ran:
            fig = b["stages"].get(stage)
            if fig is None:
                cells.append("–")
                continue
            median, spread, *rates = _figure_texts(fig)
            cells.append(", ".join([f"{median} [{spread}]", *rates]))
        lines.append(f"| {stage} | {flops / 1e9:.4g} | " if flops else f"| {stage} | – | ")
        lines[-1] += " | ".join(cells) + " |"
    lines.append("| peak host RSS | | " + " | ".join(_bytes(_host_peak(b["memory"])) for b in ran) + " |")
    for b in report["backends"]:
        if b["status"] != "ok":
            lines.append(f"\n{b['name']}: {b['status']}: {b['reason']}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# Plot


def write_plot(result: BenchResult, path: str | os.PathLike) -> None:
    """Bar plot PNG: one group per stage, one bar per backend (median, p10–p90 whiskers), log time axis."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
    import numpy as np

    ran = [b for b in result.backends if b.status == "ok"]
    stages = _stage_order(b.stages for b in result.backends)
    width = 0.8 / max(len(ran), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(stages) * max(len(ran), 1) ** 0.5), 4.5))
    x = np.arange(len(stages))
    for k, b in enumerate(ran):
        present = [i for i, s in enumerate(stages) if s in b.stages]
        med = np.array([1e3 * b.stages[stages[i]].median for i in present])
        lo = np.array([1e3 * b.stages[stages[i]].p10 for i in present])
        hi = np.array([1e3 * b.stages[stages[i]].p90 for i in present])
        ax.bar(x[present] + (k - (len(ran) - 1) / 2) * width, med, width, label=b.name,
               yerr=np.stack([med - lo, hi - med]), capsize=2)
    ax.set_xticks(x, stages, rotation=30, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("median time per call (ms)")
    ax.set_title(f"{result.config.name} {result.config.variant}, {result.spec.device} {result.spec.dtype}, "
                 f"{result.spec.steps} steps")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------
# HTML


def _html_cell(fig: dict | None) -> str:
    if fig is None:
        return "–"
    median, *rest = _figure_texts(fig)
    return f"<b>{median}</b>" + "".join(f"<small>{text}</small>" for text in rest)


def _machine_facts(report: dict) -> dict:
    machine, peaks = report["machine"], report["peaks"]
    gpu = machine.get("gpu") or {}
    gpu_text = ", ".join(str(v) for v in (gpu.get("name"), gpu.get("memory_bytes") and _bytes(gpu["memory_bytes"]),
                                          gpu.get("compute_capability") and f"sm {gpu['compute_capability']}",
                                          gpu.get("driver") and f"driver {gpu['driver']}") if v)
    return {"host": machine.get("hostname"), "os": machine.get("os"), "cpu": machine.get("cpu"),
            "cpu cores": machine.get("cpu_count"), "torch threads": machine.get("torch_threads"), "gpu": gpu_text,
            "matmul peak": f"{peaks['matmul_tflops']:.3g} TFLOP/s ({peaks['matmul_dtype']}, n={peaks['matmul_size']}, "
                           f"{peaks.get('matmul_library', '')}, measured)",
            "copy bandwidth": f"{peaks['copy_gbps']:.3g} GB/s (measured)", "python": machine.get("python"),
            "versions": ", ".join(f"{k} {v}" for k, v in machine.get("versions", {}).items())}


def to_html(report: dict) -> str:
    """A saved JSON report as one self-contained HTML page: machine, the side-by-side table,
    per-stage bars per backend with the FLOP floor (reference FLOPs at the measured matmul
    peak: no backend can go below it), TFLOP/s and memory. No script, no external file."""
    from ..viewer.html import bar_chart, definitions, document, esc, table

    s, peaks = report["settings"], report["peaks"]
    ran = [b for b in report["backends"] if b["status"] == "ok"]
    stages = _stage_order(b["stages"] for b in ran)
    title = f"sv3d-trt bench: {s['config']} {s['variant']}, {s['steps']} steps, {s['device']} {s['dtype']}"
    rows = []
    for stage in stages:
        flops = report["flops"].get(stage_flops_key(stage))
        rows.append([esc(stage) + (f"<small>{flops / 1e9:.4g} GFLOP</small>" if flops else "")]
                    + [_html_cell(b["stages"].get(stage)) for b in ran])
    rows.append(["load"] + [format_seconds(b["load_seconds"]) for b in ran])
    rows.append(["peak host RSS"] + [_bytes(_host_peak(b["memory"])) for b in ran])
    if any("gpu_device_peak_used_bytes" in b["memory"] or "gpu_torch_peak_allocated_bytes" in b["memory"] for b in ran):
        rows.append(["peak GPU (torch / device)"] + [f"{_bytes(b['memory'].get('gpu_torch_peak_allocated_bytes'))} / "
                                                    f"{_bytes(b['memory'].get('gpu_device_peak_used_bytes'))}" for b in ran])
    colour = {b["name"]: f"series-{i % 6}" for i, b in enumerate(ran)}
    charts = []
    for stage in stages:
        flops = report["flops"].get(stage_flops_key(stage))
        floor = flops / (peaks["matmul_tflops"] * 1e12) if flops else None  # seconds
        bars = [(b["name"], b["stages"][stage]["median_ms"] / 1e3, colour[b["name"]]) for b in ran if stage in b["stages"]]
        charts.append(f'<div class="stage"><h3>{esc(stage)}</h3>' + bar_chart(
            bars, format_seconds, floor, floor and f"FLOP floor {format_seconds(floor)}") + "</div>")
    memory = [(b["name"], _host_peak(b["memory"]), colour[b["name"]]) for b in ran if _host_peak(b["memory"])]
    not_run = "".join(f"<li>{esc(b['name'])}: {esc(b['status'])}: {esc(b['reason'])}</li>"
                      for b in report["backends"] if b["status"] != "ok")
    mesh = report.get("mesh")
    body = (f"<header><h1>{esc(title)}</h1><p class=\"dim\">{esc(report['created'])}, checkpoint "
            f"{esc(s.get('checkpoint'))}, warm-up {s['warmup']}, {s['iters']} calls per stage</p></header>"
            f'<section id="machine"><h2>Machine</h2>{definitions(_machine_facts(report))}</section>'
            f'<section id="table"><h2>Per stage: median, p10–p90, FLOP rate (% of the measured peak), speed-up vs {REFERENCE}</h2>'
            f"{table(['stage'] + [esc(b['name']) for b in ran], rows)}"
            + (f"<h3>not run</h3><ul>{not_run}</ul>" if not_run else "") + "</section>"
            f'<section id="bars"><h2>Median time per call; dashed: the FLOP floor at the measured peak</h2>'
            f"{''.join(charts)}</section>"
            f'<section id="memory"><h2>Peak host memory</h2>{bar_chart(memory, _bytes) if memory else ""}</section>'
            + (f'<section id="mesh"><h2>Mesh</h2><p>{esc(_mesh_text(mesh))}</p></section>' if mesh else ""))
    return document(title, body)


def write_html(result: BenchResult, path: str | os.PathLike) -> None:
    write_bytes_atomic(path, to_html(to_json(result)).encode("utf-8"))

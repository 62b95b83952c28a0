"""`sv3d-trt bench`: per-stage timings of every backend in one process, read against the
measured matmul peak and copy bandwidth of the device (harness.py runs, report.py prints)."""
from .harness import BackendResult, BenchResult, BenchSpec, default_dtype, run_bench
from .report import (mesh_line, not_run_lines, render_table, to_html, to_json, to_markdown, write_html, write_json,
                     write_plot)

__all__ = ["BackendResult", "BenchResult", "BenchSpec", "default_dtype", "mesh_line", "not_run_lines", "render_table",
           "run_bench", "to_html", "to_json", "to_markdown", "write_html", "write_json", "write_plot"]

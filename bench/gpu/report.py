"""The check's outputs: one JSON with everything, one Markdown page, one short table printed last.

Only the tail of a command's output comes back from the GPU machine, so the summary table is
the last thing printed and each row fits one line; details live in the JSON and Markdown
(written again after every part, atomically, so a killed run still leaves what it measured).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from sv3d_trt.fileio import write_bytes_atomic, write_json_atomic

SCHEMA = "sv3d-trt-gpu-check"
JSON_NAME = "gpu_check.json"
MARKDOWN_NAME = "gpu_check.md"


def _plain(obj):
    """JSON-safe copy: non-finite floats become strings (a NaN is a finding, not a crash)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # numpy / torch scalars
        return _plain(obj.item())
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def summary_rows(results: dict[str, dict]) -> list[tuple[str, str, str, str]]:
    return [(name, r["status"], f"{r['seconds']:.1f}", r.get("summary") or r.get("reason", ""))
            for name, r in results.items()]


def summary_table(results: dict[str, dict], width: int = 150) -> str:
    """Fixed-width table, one row per part: name, status, seconds, the part's one-line summary."""
    rows = [("part", "status", "s", "result")] + summary_rows(results)
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    w2 = max(len(r[2]) for r in rows)
    lines = []
    for i, (name, status, seconds, text) in enumerate(rows):
        line = f"{name:<{w0}}  {status:<{w1}}  {seconds:>{w2}}  {text}"
        lines.append(line[:width])
        if i == 0:
            lines.append("-" * min(width, len(line) + 40))
    return "\n".join(lines)


def failures(results: dict[str, dict]) -> list[str]:
    """One line per failed part and per failed GPU test (printed just above the table)."""
    lines = [f"FAILED {name}: {r.get('reason', '')}" for name, r in results.items() if r["status"] == "failed"]
    tests = results.get("pytest_gpu", {}).get("data", {}).get("tests", [])
    lines += [f"FAILED test {t['id']}: {t.get('message', '')}"[:300] for t in tests
              if t["outcome"] in ("failed", "error")]
    return lines


def document(header: dict, results: dict[str, dict]) -> dict:
    return _plain({"schema": SCHEMA, "schema_version": 1, **header, "parts": results})


def _markdown_details(name: str, record: dict) -> list[str]:
    data = record.get("data") or {}
    lines = [f"### {name}: {record['status']}", ""]
    if record.get("reason"):
        lines += [f"Reason: {record['reason']}", ""]
    tables = data.get("tables", {})
    for title, rows in tables.items():
        if not rows:
            continue
        keys = list(rows[0])
        lines += [f"**{title}**", "", "| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
        lines += ["| " + " | ".join(_cell(row.get(k)) for k in keys) + " |" for row in rows]
        lines.append("")
    rest = {k: v for k, v in data.items() if k != "tables"}
    if rest:
        lines += ["```json", json.dumps(_plain(rest), indent=1)[:6000], "```", ""]
    if record.get("traceback"):
        lines += ["```", *record["traceback"], "```", ""]
    return lines


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def to_markdown(header: dict, results: dict[str, dict]) -> str:
    gpu = (header.get("machine") or {}).get("gpu") or {}
    lines = [f"# GPU check {header.get('created', '')}", "",
             f"Device {header['device']} ({gpu.get('name', 'no GPU')}), config {header['config']}, "
             f"budget {header['budget_s']:.0f} s, command `{header['command']}`", "",
             "| part | status | s | result |", "| --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(row) + " |" for row in summary_rows(results)]
    lines.append("")
    for name, record in results.items():
        lines += _markdown_details(name, record)
    return "\n".join(lines)


def write_reports(out: Path, header: dict, results: dict[str, dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / JSON_NAME, document(header, results))
    write_bytes_atomic(out / MARKDOWN_NAME, (to_markdown(header, results) + "\n").encode())

"""HTML building blocks shared by the output-folder page and the benchmark report.

Everything is rendered server-side into one string: text is escaped here, data for the page's
script travels as inline JSON, and the stylesheet and scripts are inlined, so a page needs no
network and no second request (Chromium blocks fetch() and module imports from file:// pages).
"""
from __future__ import annotations

import html
import json
from importlib import resources
from typing import Callable

GENERATOR = "sv3d-trt viewer"  # <meta name="generator">: marks pages this package may overwrite


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def asset(name: str) -> str:
    """Text of a file in sv3d_trt/viewer/assets/."""
    return resources.files("sv3d_trt.viewer").joinpath("assets", name).read_text(encoding="utf-8")


def inline_script(source: str) -> str:
    """A classic <script> holding `source`; '</script' inside it would end the element early."""
    return "<script>" + source.replace("</script", "<\\/script") + "</script>"


def json_script(element_id: str, obj) -> str:
    """Data for the page's script: <script type="application/json">, parsed with JSON.parse."""
    text = json.dumps(obj, separators=(",", ":")).replace("</", "<\\/")
    return f'<script type="application/json" id="{esc(element_id)}">{text}</script>'


def table(header: list[str], rows: list[list[str]], css_class: str = "") -> str:
    """A table of already-rendered cells (escape text with esc before passing it)."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def definitions(items: dict) -> str:
    """A <dl> of label -> value (values escaped), skipping empty values."""
    rows = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items.items() if v not in (None, "", {}, []))
    return f"<dl>{rows}</dl>"


def bar_chart(bars: list[tuple[str, float, str]], fmt: Callable[[float], str], floor: float | None = None,
              floor_label: str = "") -> str:
    """Horizontal bars as inline SVG: (label, value, css colour class) each, on one linear
    scale from 0 to the largest value, labelled with fmt(value); `floor` draws a dashed
    vertical line at that value."""
    top = max([v for _, v, _ in bars] + [floor or 0.0]) or 1.0
    label_w, bar_w, row_h = 150, 360, 22
    height = row_h * len(bars) + (18 if floor is not None else 4)
    parts = [f'<svg class="bars" viewBox="0 0 {label_w + bar_w + 90} {height}" '
             f'width="{label_w + bar_w + 90}" height="{height}" role="img">']
    for i, (label, value, colour) in enumerate(bars):
        y = i * row_h + 2
        w = max(1.0, bar_w * value / top)
        parts.append(f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end">{esc(label)}</text>'
                     f'<rect class="{esc(colour)}" x="{label_w}" y="{y}" width="{w:.1f}" height="{row_h - 6}">'
                     f'<title>{esc(label)}: {esc(fmt(value))}</title></rect>'
                     f'<text x="{label_w + w + 4:.1f}" y="{y + 14}">{esc(fmt(value))}</text>')
    if floor is not None:
        x = label_w + bar_w * floor / top
        parts.append(f'<line class="floor" x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{height - 14}"/>'
                     f'<text class="floor-label" x="{x:.1f}" y="{height - 2}">{esc(floor_label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def document(title: str, body: str, scripts: str = "") -> str:
    """The whole page: head with the inlined stylesheet, body, then the scripts."""
    return ("<!DOCTYPE html>\n"
            f'<html lang="en"><head><meta charset="utf-8"><meta name="generator" content="{GENERATOR}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{asset('viewer.css')}</style></head>"
            f"<body>{body}{scripts}</body></html>\n")

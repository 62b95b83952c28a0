"""What a backend's ONNX export or engine directory weighs, took to make, and computes.

Reads the records `sv3d-trt export` (export.json) and `sv3d-trt build` (manifest.json) leave
beside their files; the FLOPs of each ONNX graph are counted from the graph itself
(flops.onnx_graph_flops), for an engine directory from the ONNX sources its manifest names.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..contract.manifest import EXPORT_INFO, MANIFEST_NAME
from .flops import onnx_graph_flops


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _graph_flops(onnx_dir: Path) -> dict[str, int]:
    return {p.name[: -len(".onnx")]: onnx_graph_flops(p)["total"] for p in sorted(onnx_dir.glob("*.onnx"))}


def describe_artifacts(directory: str | os.PathLike) -> dict:
    """{"directory", "bytes" (per file), "total_bytes", "export_seconds"/"build_seconds" (per graph),
    "precision", "graph_flops" (per graph)} for an export or engine directory."""
    directory = Path(directory)
    files = {p.name: p.stat().st_size for p in sorted(directory.iterdir()) if p.is_file()}
    out: dict = {"directory": str(directory.resolve()), "bytes": files, "total_bytes": sum(files.values())}
    export = _read_json(directory / EXPORT_INFO)
    if export is not None:
        out["precision"] = export.get("precision")
        out["export_seconds"] = {g: e["export_seconds"] for g, e in export.get("graphs", {}).items()
                                 if "export_seconds" in e}
    manifest = _read_json(directory / MANIFEST_NAME)
    if manifest is not None:
        out["precision"] = manifest.get("precision")
        out["builder"] = manifest.get("builder")
        out["build_seconds"] = {g: e["build_seconds"] for g, e in manifest.get("engines", {}).items()
                                if "build_seconds" in e}
    onnx_dir = directory
    if manifest is not None and not any(directory.glob("*.onnx")) and manifest.get("onnx_dir"):
        onnx_dir = Path(manifest["onnx_dir"])
    if onnx_dir.is_dir():
        out["graph_flops"] = _graph_flops(onnx_dir)
    return out

"""The shape of manifest.json and export.json, checked before anything trusts a field.

A record that a person edited, a truncated copy or another tool's file must end in one
StaleEngineError naming the field, never a KeyError or TypeError deep in a runtime, and a file
entry must name a file inside its own folder (no absolute paths, no `..`): a runtime opens it.
Only the fields sv3d-trt reads are checked; others pass through. Torch-free.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import StaleEngineError
from .backends import ENGINE_BACKENDS
from .graphs import GRAPH_NAMES

# The names models/config.py defines (contract/ imports no models; a test keeps them equal).
CONFIG_NAMES = ("full", "tiny")
VARIANT_NAMES = ("sv3d_u", "sv3d_p")
EXPORT_PRECISIONS = ("fp32", "fp16", "bf16")
_KINDS = {dict: "an object", list: "a list", str: "a string", int: "an integer", bool: "true or false"}


class _Checker:
    """Field access that raises StaleEngineError("<path>: <where> ...; <remedy>")."""

    def __init__(self, path: Path, remedy: str):
        self.path, self.remedy = path, remedy

    def fail(self, what: str):
        raise StaleEngineError(f"{self.path} is malformed: {what}; {self.remedy}")

    def field(self, record: dict, key: str, kind: type, where: str = "", optional: bool = False):
        if key not in record:
            if optional:
                return None
            self.fail(f"{where}{key!r} is missing")
        value = record[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.fail(f"{where}{key!r} must be {_KINDS[kind]}, not {type(value).__name__} {str(value)[:40]!r}")
        return value

    def choice(self, record: dict, key: str, choices: tuple[str, ...], where: str = "", optional: bool = False):
        value = self.field(record, key, str, where, optional)
        if value is not None and value not in choices:
            self.fail(f"{where}{key!r} is {value!r}, not one of {', '.join(choices)}")
        return value

    def file_name(self, name, where: str) -> str:
        """A plain file name in the record's folder: a runtime opens folder / name."""
        if not isinstance(name, str):
            self.fail(f"{where} must be a file name, not {type(name).__name__}")
        if name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name or Path(name).is_absolute():
            self.fail(f"{where} {name!r} must name a file inside {self.path.parent} (no folders, no '..')")
        return name

    def digest(self, value, where: str) -> str:
        if not (isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)):
            self.fail(f"{where} must be a sha256 hex digest, not {str(value)[:40]!r}")
        return value

    def per_graph(self, record: dict, key: str):
        """(entry, "key.graph.") for each entry of an object keyed by graph name."""
        for graph, entry in (self.field(record, key, dict, optional=True) or {}).items():
            if graph not in GRAPH_NAMES:
                self.fail(f"{key}: {graph!r} is not one of the graphs {', '.join(GRAPH_NAMES)}")
            if not isinstance(entry, dict):
                self.fail(f"{key}.{graph} must be an object")
            yield entry, f"{key}.{graph}."

    def tensors(self, record: dict, key: str, where: str) -> None:
        for i, t in enumerate(self.field(record, key, list, where, optional=True) or []):
            at = f"{where}{key}[{i}]: "
            if not isinstance(t, dict):
                self.fail(f"{at}must be an object")
            self.field(t, "name", str, at)
            self.field(t, "dtype", str, at)
            shape = self.field(t, "shape", list, at)
            if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
                self.fail(f"{at}shape {shape} must be positive integers (fixed shapes)")

    def hashed_files(self, source: dict, where: str) -> None:
        """A {"file", "sha256", "external_data": {name: sha256}} record (contract/manifest.py source_entry)."""
        self.file_name(self.field(source, "file", str, where), f"{where}file")
        self.digest(self.field(source, "sha256", str, where), f"{where}sha256")
        for name, digest in (self.field(source, "external_data", dict, where, optional=True) or {}).items():
            self.file_name(name, f"{where}external_data name")
            self.digest(digest, f"{where}external_data[{name!r}]")


def check_manifest(data, path: Path) -> dict:
    """manifest.json's fields, types and file names (format checked by the caller)."""
    from .manifest import Precision

    precisions = tuple(p.value for p in Precision)
    c = _Checker(path, "rebuild the engines with `sv3d-trt build`")
    if not isinstance(data, dict):
        c.fail("not a JSON object")
    builder = c.field(data, "builder", dict)
    c.choice(builder, "backend", ENGINE_BACKENDS, "builder.")
    c.field(builder, "version", str, "builder.")
    targets = c.field(data, "targets", list)
    if not targets or not all(isinstance(t, str) and _is_arch(t) for t in targets):
        c.fail(f"'targets' must list GPU architectures like \"sm89\", not {str(targets)[:60]}")
    c.choice(data, "precision", precisions)
    c.field(data, "onnx_dir", str, optional=True)
    export = c.field(data, "export", dict, optional=True) or {}
    c.choice(export, "config", CONFIG_NAMES, "export.", optional=True)
    c.choice(export, "variant", VARIANT_NAMES, "export.", optional=True)
    c.choice(export, "precision", EXPORT_PRECISIONS, "export.", optional=True)
    for graph in c.field(export, "graphs", list, "export.", optional=True) or []:
        if graph not in GRAPH_NAMES:
            c.fail(f"export.graphs: {str(graph)[:40]!r} is not one of the graphs {', '.join(GRAPH_NAMES)}")
    if not c.field(data, "engines", dict):
        c.fail("'engines' is empty: no engine was built")
    for entry, where in c.per_graph(data, "engines"):
        c.file_name(c.field(entry, "file", str, where), f"{where}file")
        c.digest(c.field(entry, "sha256", str, where), f"{where}sha256")
        c.field(entry, "bytes", int, where, optional=True)
        c.choice(entry, "precision", precisions, where)
        c.hashed_files(c.field(entry, "source", dict, where), f"{where}source.")
        if "built_from" in entry:
            c.hashed_files(c.field(entry, "built_from", dict, where), f"{where}built_from.")
        c.tensors(entry, "inputs", where)
        c.tensors(entry, "outputs", where)
    return data


def check_export_info(info, path: Path) -> dict:
    """export.json's fields, types and file names."""
    c = _Checker(path, "re-run `sv3d-trt export`")
    if not isinstance(info, dict):
        c.fail("not a JSON object")
    c.choice(info, "config", CONFIG_NAMES)
    c.choice(info, "variant", VARIANT_NAMES)
    c.choice(info, "precision", EXPORT_PRECISIONS)
    c.field(info, "plugins", bool, optional=True)
    if c.field(info, "decode_chunk", int, optional=True) is not None and info["decode_chunk"] < 1:
        c.fail(f"'decode_chunk' is {info['decode_chunk']}, not a positive number of frames")
    for entry, where in c.per_graph(info, "graphs"):
        c.file_name(c.field(entry, "file", str, where), f"{where}file")
        for name in c.field(entry, "external_data", list, where, optional=True) or []:
            c.file_name(name, f"{where}external_data entry")
        if "source" in entry:
            c.hashed_files(c.field(entry, "source", dict, where), f"{where}source.")
        c.tensors(entry, "inputs", where)
        c.tensors(entry, "outputs", where)
    c.field(info, "calibration", dict, optional=True)
    return info


def _is_arch(text: str) -> bool:
    from .manifest import parse_arch

    try:
        major, minor = parse_arch(text)
    except ValueError:
        return False
    return 5 <= major <= 20 and 0 <= minor <= 9

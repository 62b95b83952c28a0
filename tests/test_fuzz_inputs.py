"""Seeded, bounded fuzzing of the files users hand us: a tiny checkpoint's safetensors header
and an engine folder's manifest.json / an export's export.json.

Each mutation must end in the project's typed error, or load exactly the data the file points
at: never another exception, never a hang. Mutations run in child processes, BATCH per child,
each under a SIGALRM of PER_MUTATION_S; a child that dies or overruns fails the test.
"""
from __future__ import annotations

import copy
import hashlib
import json
import random
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest

SEED = 14
BATCH = 50
PER_MUTATION_S = 20
CHECKPOINT_MUTATIONS = 200
RECORD_MUTATIONS = 200  # half manifest.json, half export.json
ROOM = 1 << 16  # spare header bytes beyond twice the JSON (UTF-16 doubles it, nesting adds 50 kB)
ROOT = Path(__file__).resolve().parents[1]


class _Hang(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Hang


# ---- mutations --------------------------------------------------------------------------


_JUNK = [None, True, 0, -1, 3, 2**70, 1.5, "", "x", "../x", "/abs/x", [], [1], ["x"], {}, {"a": 1}]


def _mutate_entry(rng: random.Random, header: dict, key: str) -> None:
    """One structure-aware change to header[key] (copied first: the shared header stays intact)."""
    entry = header[key] = copy.deepcopy(header[key])
    begin, end = entry["data_offsets"]
    shape = entry["shape"]
    other = header[rng.choice([k for k in header if k != "__metadata__"])]
    op = rng.randrange(6)
    if op == 0:
        entry["dtype"] = rng.choice(["F32", "F16", "BF16", "F64", "I64", "I32", "I8", "U8", "BOOL", "F8_E4M3",
                                     "C64", "Q4", *_JUNK])
    elif op == 1:
        entry["shape"] = rng.choice([[], [0], [-1], [1.5], [True], "3", shape[::-1], shape + [1], shape[:-1],
                                     [d + 1 for d in shape], [2**40], [[1]], *_JUNK])
    elif op == 2:
        entry["data_offsets"] = rng.choice([[begin], [begin, end, end], [end, begin], [begin + 1, end + 1],
                                            [max(begin - 4, 0), end], [begin, end + 4], [begin, end - 4],
                                            [0, end - begin], [str(begin), end], [begin, 2**70], [-4, end],
                                            list(other["data_offsets"]), *_JUNK])
    elif op == 3:
        del entry[rng.choice(["dtype", "shape", "data_offsets"])]
    elif op == 4:
        header[key] = rng.choice(_JUNK)
    else:
        entry[rng.choice(["extra", "dtype2", ""])] = rng.choice(_JUNK)  # unknown fields are ignored


def mutate_checkpoint(rng: random.Random, header: dict, vae_keys: list[str]) -> tuple[bytes, int, int]:
    """A mutated safetensors header: (JSON blob, change of the length field, change of the file's
    tail in bytes: < 0 cut, > 0 zeros appended). Header edits hit, half the time, a tensor the
    oracle loads."""
    header = dict(header)  # entries are copied when changed
    tensors = [k for k in header if k != "__metadata__"]
    op, length, tail = rng.randrange(12), 0, 0
    if op <= 3:
        _mutate_entry(rng, header, rng.choice(vae_keys if rng.random() < 0.5 else tensors))
    elif op == 4:  # rename a tensor
        key = rng.choice(vae_keys)
        header[key + rng.choice(["x", ".weight", ""]) if rng.random() < 0.7 else key[::-1]] = header.pop(key)
    elif op == 5:
        header["__metadata__"] = rng.choice([*_JUNK, {"format": "pt", "note": "x"}, {"a": {"b": "c"}}])
    elif op == 6:  # swap two tensors' data: a valid file, it must load exactly as it says
        a, b = rng.sample(vae_keys, 2)
        header[a], header[b] = dict(header[a]), dict(header[b])
        header[a]["data_offsets"], header[b]["data_offsets"] = header[b]["data_offsets"], header[a]["data_offsets"]
    elif op == 7:  # shuffled entry order: the same file
        header = dict(rng.sample(list(header.items()), len(header)))
    elif op == 8:  # the header length field
        length = rng.choice([-9, -1, 1, 7, 2**40])
    elif op == 9:  # truncated, or data after the last tensor
        tail = -rng.randint(1, 4000) if rng.random() < 0.5 else rng.randint(1, 64)
    blob = json.dumps(header).encode()
    if op == 10:  # a flipped byte in the JSON
        i = rng.randrange(len(blob))
        blob = blob[:i] + bytes([blob[i] ^ (1 << rng.randrange(8))]) + blob[i + 1:]
    elif op == 11:  # a duplicate key, leading space, deep nesting, another encoding
        key = rng.choice(vae_keys)
        blob = rng.choice([blob[:-1] + b", " + json.dumps({key: header[key]}).encode()[1:], b" " + blob,
                           b"[" * 50_000 + blob, blob.decode().encode("utf-16")])
    return blob, length, tail


def _leaves(node, path=()):
    """(path, value) of every value in a JSON tree."""
    yield path, node
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in children:
        yield from _leaves(v, (*path, k))


def mutate_record(rng: random.Random, record: dict) -> str:
    """A mutated JSON record (manifest.json / export.json) as text."""
    record = copy.deepcopy(record)
    op = rng.randrange(8)
    if op >= 6:  # text-level damage
        text = json.dumps(record)
        if op == 6:
            return text[: rng.randrange(len(text))]
        return rng.choice(["[" * 50_000, text.replace('"', "'", 1), json.dumps([record]), "\udcff".join([text, ""])])
    path, _ = rng.choice([p for p in _leaves(record) if p[0]])
    parent = record
    for k in path[:-1]:
        parent = parent[k]
    last = path[-1]
    if op <= 3:
        parent[last] = rng.choice([*_JUNK, "sm89", "sm_89", "fp16", "int4", "sv3d_u", "tiny", "full",
                                   "0" * 64, {"file": "../../etc/passwd", "sha256": "0" * 64}])
    elif op == 4 and isinstance(parent, dict):
        del parent[last]
    elif isinstance(parent, dict):
        parent[rng.choice(["extra", "graphs", "engines", "built_from", "source"])] = rng.choice(_JUNK)
    else:
        parent.append(copy.deepcopy(parent[last]))
    return json.dumps(record)


# ---- oracles (run in the child) ------------------------------------------------------------


def checkpoint_oracle(path: Path) -> str:
    """Load the VAE encoder through the real loader; if it loads, every tensor must be exactly
    the bytes the (mutated) header points at, read here independently."""
    import numpy as np
    import torch

    from sv3d_trt.errors import CheckpointError
    from sv3d_trt.models.checkpoint import PREFIXES, load_checkpoint

    try:
        models = load_checkpoint(path, components=("vae_encoder",))
    except CheckpointError:
        return "typed"
    dtypes = {"F32": np.float32, "F16": np.float16, "F64": np.float64}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        for name, tensor in models.vae_encoder.state_dict().items():
            entry = header[PREFIXES["vae_encoder"] + name]
            begin, end = entry["data_offsets"]
            f.seek(8 + n + begin)
            raw = f.read(end - begin)
            if entry["dtype"] == "BF16":
                expected = torch.from_numpy(np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(torch.float32)
            else:
                expected = torch.from_numpy(np.frombuffer(raw, dtypes[entry["dtype"]]).astype(np.float32))
            if not torch.equal(tensor.reshape(-1), expected):
                return f"wrong data in {name}"
    return "identical"


def _checkpoint_mutation(rng, path: Path, room: int, size: int, header: dict, vae_keys: list[str], tail: bytes) -> str:
    """Apply one mutation in place (the file's header has `room` bytes, padded with spaces, so no
    mutation rewrites the 100 MB of data), run the oracle, restore the file."""
    blob, length, cut_or_add = mutate_checkpoint(rng, header, vae_keys)
    assert len(blob) <= room, "raise ROOM"
    with open(path, "r+b") as f:
        f.write(struct.pack("<Q", room + length) + blob.ljust(room))
        if cut_or_add < 0:
            f.truncate(size + cut_or_add)
        else:
            f.seek(size)
            f.write(b"\0" * cut_or_add)
    try:
        return checkpoint_oracle(path)
    finally:
        with open(path, "r+b") as f:
            f.truncate(size)
            if cut_or_add < 0:
                f.seek(size + cut_or_add)
                f.write(tail[cut_or_add:])


def record_oracle(kind: str, folder: Path) -> str:
    from sv3d_trt.contract.manifest import read_export_info, verify_engines
    from sv3d_trt.errors import StaleEngineError

    try:
        if kind == "manifest":
            manifest = verify_engines(folder)
            for entry in manifest.engines.values():  # what it accepted stays inside the folder
                if (folder / entry["file"]).resolve().parent != folder.resolve():
                    return f"engine file outside the folder: {entry['file']!r}"
        else:
            read_export_info(folder)
            read_export_info(folder, require_graphs=("clip",))
    except StaleEngineError:
        return "typed"
    return "identical"


def child(kind: str, source: str, workdir: str, start: int, count: int) -> None:
    """Run mutations start..start+count of `kind`, one JSON line of outcome each."""
    signal.signal(signal.SIGALRM, _on_alarm)
    workdir = Path(workdir)
    if kind == "checkpoint":
        data = Path(source).read_bytes()
        (n,) = struct.unpack("<Q", data[:8])
        header, body = json.loads(data[8:8 + n]), data[8 + n:]
        vae_keys = [k for k in header if k.startswith("conditioner.embedders.1.encoder.encoder.")]
        room = 2 * n + ROOM  # spaces after the JSON: still the same, valid file
        path = workdir / f"mutated-{start}.safetensors"
        path.write_bytes(struct.pack("<Q", room) + data[8:8 + n].ljust(room) + body)
        size, tail = path.stat().st_size, body[-4096:]
        del data, body
    else:
        folder = Path(source)
        name = "manifest.json" if kind == "manifest" else "export.json"
        record = json.loads((workdir / "pristine.json").read_text())  # the folder's copy gets mutated
    for i in range(start, start + count):
        rng = random.Random(f"{SEED}-{kind}-{i}")
        signal.alarm(PER_MUTATION_S)
        try:
            if kind == "checkpoint":
                outcome = _checkpoint_mutation(rng, path, room, size, header, vae_keys, tail)
            else:
                (folder / name).write_text(mutate_record(rng, record), errors="surrogateescape")
                outcome = record_oracle(kind, folder)
        except _Hang:
            outcome = f"hang (> {PER_MUTATION_S} s)"
        except Exception as e:  # noqa: BLE001 - the finding this test exists for
            outcome = f"untyped {type(e).__name__}: {str(e)[:200]}"
        finally:
            signal.alarm(0)
        print(json.dumps({"i": i, "outcome": outcome}), flush=True)


def _run(kind: str, source: Path, workdir: Path, total: int) -> dict[int, str]:
    outcomes = {}
    for start in range(0, total, BATCH):
        code = (f"from tests.test_fuzz_inputs import child\n"
                f"child({kind!r}, {str(source)!r}, {str(workdir)!r}, {start}, {BATCH})")
        r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                           timeout=BATCH * PER_MUTATION_S + 120)
        lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
        assert r.returncode == 0 and len(lines) == BATCH, f"child died: rc {r.returncode}\n{r.stderr[-2000:]}"
        outcomes.update((line["i"], line["outcome"]) for line in lines)
    return outcomes


def _check(outcomes: dict[int, str], kind: str) -> None:
    bad = {i: o for i, o in outcomes.items() if o not in ("typed", "identical")}
    assert not bad, f"{len(bad)} of {len(outcomes)} {kind} mutations: " + "; ".join(f"#{i} {o}" for i, o in bad.items())
    # Both outcomes occur: the fuzz reaches past the first check and also breaks files.
    assert {"typed", "identical"} <= set(outcomes.values()), sorted(set(outcomes.values()))


def test_checkpoint_header_mutations(tiny_checkpoint, tmp_path):
    _check(_run("checkpoint", tiny_checkpoint, tmp_path, CHECKPOINT_MUTATIONS), "checkpoint")


def _record_folders(tmp_path: Path) -> tuple[Path, Path]:
    """An engine folder (fake engine bytes, real hashes) and the export it names, both valid."""
    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    onnx_dir, engines = tmp_path / "onnx", tmp_path / "engines"
    onnx_dir.mkdir()
    engines.mkdir()
    (onnx_dir / "clip.onnx").write_bytes(b"graph")
    (onnx_dir / "clip.onnx.data").write_bytes(b"weights")
    (engines / "clip.engine").write_bytes(b"engine")
    source = {"file": "clip.onnx", "sha256": digest(onnx_dir / "clip.onnx"),
              "external_data": {"clip.onnx.data": digest(onnx_dir / "clip.onnx.data")}}
    io = {"inputs": [{"name": "image", "shape": [1, 3, 64, 64], "dtype": "float32"}],
          "outputs": [{"name": "clip_embedding", "shape": [1, 32], "dtype": "float32"}]}
    export = {"config": "tiny", "variant": "sv3d_p", "precision": "fp16", "decode_chunk": 7, "plugins": False,
              "graphs": {"clip": {"file": "clip.onnx", "external_data": ["clip.onnx.data"], "source": source, **io}}}
    manifest = {"format": 1, "builder": {"backend": "tensorrt-rtx", "version": "1.7.1"}, "targets": ["sm89"],
                "precision": "fp16", "onnx_dir": str(onnx_dir),
                "export": {"config": "tiny", "variant": "sv3d_p", "precision": "fp16"},
                "engines": {"clip": {"file": "clip.engine", "sha256": digest(engines / "clip.engine"), "bytes": 6,
                                     "precision": "fp16", "source": source, **io}}}
    (onnx_dir / "export.json").write_text(json.dumps(export))
    (engines / "manifest.json").write_text(json.dumps(manifest))
    return engines, onnx_dir


@pytest.mark.parametrize("kind", ["manifest", "export"])
def test_record_mutations(tmp_path, kind):
    engines, onnx_dir = _record_folders(tmp_path)
    assert record_oracle("manifest", engines) == record_oracle("export", onnx_dir) == "identical"  # valid as made
    folder = engines if kind == "manifest" else onnx_dir
    (tmp_path / "pristine.json").write_text((folder / f"{kind}.json").read_text())
    _check(_run(kind, folder, tmp_path, RECORD_MUTATIONS // 2), kind)

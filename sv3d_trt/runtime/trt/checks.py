"""Everything decidable about an engine directory before one engine is deserialized: the
device, the TensorRT flavour and version, this GPU's architecture among the build targets,
the SV3D config/variant, the engines' IO (the buffer plan) and their files."""
from __future__ import annotations

from ...contract.manifest import Manifest, check_compatible
from ...errors import BackendUnavailableError, StaleEngineError
from ...models.config import SV3DConfig, get_config
from .plan import BufferPlan, plan_buffers


def device_index(device: str | int) -> int:
    """'cuda' / 'cuda:1' / 1 -> GPU index."""
    if isinstance(device, int):
        return device
    kind, _, index = str(device).partition(":")
    if kind != "cuda":
        raise BackendUnavailableError(f"TensorRT engines run on a CUDA GPU, not {device!r}; use --device cuda")
    return int(index or 0)


def check_engine_files(manifest: Manifest) -> None:
    """Every engine present with the size the manifest records (cheap; `sv3d-trt verify` hashes)."""
    problems = []
    for graph, entry in manifest.engines.items():
        path = manifest.engine_path(graph)
        if not path.is_file():
            problems.append(f"{path} is missing")
        elif "bytes" in entry and path.stat().st_size != entry["bytes"]:
            problems.append(f"{path} has {path.stat().st_size} bytes, the manifest says {entry['bytes']}")
    if problems:
        raise StaleEngineError("; ".join(problems) + f". Rebuild with: {manifest.rebuild_command()}")


def check_engines(manifest: Manifest, backend: str, trt_version: str,
                  capability: tuple[int, int]) -> tuple[SV3DConfig, BufferPlan]:
    """Everything decidable before deserializing: flavour, version, GPU architecture, the SV3D
    config and the engines' IO, the files. Returns the config and the buffer plan; raises
    StaleEngineError with the rebuild command (BackendUnavailableError when no rebuild of this
    flavour can help)."""
    if backend == "tensorrt-rtx" and tuple(capability) == (9, 0):
        raise BackendUnavailableError(
            "TensorRT-RTX engines do not run on Hopper (sm90) GPUs; build full TensorRT engines: "
            f"{manifest.rebuild_command(backend='tensorrt', targets=[])}"
        )
    export = manifest.data.get("export", {})
    if "config" not in export or "variant" not in export:
        raise StaleEngineError(f"{manifest.directory}/manifest.json does not record the SV3D config; "
                               f"rebuild with: {manifest.rebuild_command()}")
    config = get_config(export["config"], export["variant"])
    check_compatible(manifest, backend, trt_version, capability, variant=config.variant)
    plan = plan_buffers(manifest.engines, config, rebuild=manifest.rebuild_command())
    check_engine_files(manifest)
    return config, plan

"""The TensorRT runner's device-memory plan, read from manifest.json alone (pure, no GPU).

Every engine IO tensor gets a device buffer allocated once per process and reused by every
request. Tensors that flow from one engine into the next share one buffer, so nothing is
copied between them (contract/graphs.py `CHAINS`: they carry the same names on purpose):

    clip.clip_embedding  ==  context.clip_embedding
    context.attn2_i      ==  denoise_step.attn2_i       (the 32 folded cross-attention values)

The denoise loop's moving parts are not fixed buffers; they are bound per step:

    latents  (steps + 1) slots of x, slot i = x_i: step i reads slot i, writes slot i + 1
    sigmas   (steps + 1) slots of one float: step i reads sigma_i and sigma_{i+1}

So the 50 steps are 50 enqueues that differ only in pointer offsets: captured once into a
CUDA graph, they replay with no host work at all, and the schedule is uploaded once per step
count. Keeping every x_i (1.7 MB each at full size, 89 MB for 50 steps) also lets a
non-finite result be traced to the step that produced it after the fact, without a host
sync inside the loop. Slots are `ALIGNMENT`-byte aligned because TensorRT requires 256-byte
aligned tensor addresses; a sigma slot therefore holds one float followed by padding.

The VAE decoder runs over fixed-size chunks: every padded chunk of the latent gets its own
input slot (uploaded in one copy), and two output slots alternate so that chunk k + 1 decodes
while chunk k is copied out.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...contract.graphs import CHAINS, FIXED_IO, GRAPH_NAMES, STEP_INPUTS, STEP_LATENT, STEP_SIGMA, GraphIO, TensorSpec
from ...errors import StaleEngineError
from ..backend import chunk_ranges

ALIGNMENT = 256  # bytes; TensorRT's required alignment of tensor addresses


def aligned(nbytes: int, alignment: int = ALIGNMENT) -> int:
    return -(-nbytes // alignment) * alignment


@dataclass(frozen=True)
class BufferSpec:
    """One device allocation: `slots` equal regions of `slot_bytes` (aligned) each."""

    key: str
    shape: tuple[int, ...]  # of one slot
    dtype: np.dtype
    slots: int = 1

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def slot_bytes(self) -> int:
        return aligned(self.nbytes)

    @property
    def total_bytes(self) -> int:
        return self.slot_bytes * self.slots


@dataclass(frozen=True)
class BufferPlan:
    io: dict[str, GraphIO]  # graph -> the engine's IO, as the manifest records it
    buffers: dict[str, BufferSpec]  # fixed buffers, allocated at load
    bindings: dict[str, dict[str, str]]  # graph -> tensor name -> buffer key (fixed tensors only)
    decode_chunk: int

    @property
    def tensors(self) -> dict[str, dict[str, TensorSpec]]:
        return by_name(self.io)

    @property
    def latent(self) -> TensorSpec:
        return self.io["denoise_step"].input("x")

    def latents(self, steps: int) -> BufferSpec:
        return BufferSpec("latents", self.latent.shape, self.latent.np_dtype, slots=steps + 1)

    def sigmas(self, steps: int) -> BufferSpec:
        return BufferSpec("sigmas", (1,), self.io["denoise_step"].input("sigma").np_dtype, slots=steps + 1)

    @property
    def fixed_bytes(self) -> int:
        return sum(b.total_bytes for b in self.buffers.values())


# IO dtypes numpy stages natively (manifest names). bf16/fp8/int4 IO would need ml_dtypes, whose
# presence depends on what else was imported: refuse them always (exported IO is float32 anyway).
STAGEABLE_DTYPES = ("float32", "float16", "int64", "int32", "int8", "uint8", "bool")


def by_name(io: dict[str, GraphIO]) -> dict[str, dict[str, TensorSpec]]:
    """graph -> tensor name -> spec, inputs and outputs together."""
    return {g: {t.name: t for t in (*graph.inputs, *graph.outputs)} for g, graph in io.items()}


def engine_io(manifest_engines: dict[str, dict]) -> dict[str, GraphIO]:
    """graph -> GraphIO from the manifest's per-engine inputs/outputs lists."""
    out = {}
    for graph, entry in manifest_engines.items():
        io = out[graph] = GraphIO.from_json(graph, entry)
        for t in (*io.inputs, *io.outputs):
            if t.dtype not in STAGEABLE_DTYPES:
                raise StaleEngineError(f"{graph}.{t.name} has IO dtype {t.dtype!r}, which the runtime cannot "
                                       "stage; re-export (graph inputs and outputs are float32) and rebuild")
    return out


def _check(problems: list[str], rebuild: str) -> None:
    if problems:
        raise StaleEngineError("the engines do not form an SV3D pipeline:\n  - " + "\n  - ".join(problems)
                               + f"\nrebuild with: {rebuild}")


def plan_buffers(manifest_engines: dict[str, dict], config, rebuild: str = "sv3d-trt build") -> BufferPlan:
    """The buffer plan for the engines of a manifest, checked against the SV3D `config`
    (frames, latent size, camera vector length of the variant). StaleEngineError lists every
    mismatch and the `rebuild` command."""
    problems = [f"no {g} engine" for g in GRAPH_NAMES if g not in manifest_engines]
    _check(problems, rebuild)
    io = engine_io(manifest_engines)
    for graph, (inputs, outputs) in FIXED_IO.items():
        problems += [f"{graph} has no input {n!r}" for n in inputs if io[graph].input(n) is None]
        problems += [f"{graph} has no output {n!r}" for n in outputs if io[graph].output(n) is None]
    _check(problems, rebuild)

    tensors = by_name(io)
    step = tensors["denoise_step"]
    T, h, z = config.num_frames, config.latent_size, config.vae.z_channels
    expected = {
        ("denoise_step", "x"): (T, z, h, h),
        ("denoise_step", "x_next"): (T, z, h, h),
        ("denoise_step", "vector"): (T, config.unet.adm_in_channels),
        ("denoise_step", "cfg_scales"): (T,),
        ("denoise_step", "sigma"): (1,),
        ("denoise_step", "sigma_next"): (1,),
        ("clip", "image"): (1, 3, config.image_size, config.image_size),
    }
    for (graph, name), shape in expected.items():
        got = tensors[graph][name].shape
        if got != shape:
            problems.append(f"{graph}.{name} has shape {list(got)}, the {config.name} {config.variant} "
                            f"config needs {list(shape)}")
    if step["x"].dtype != step["x_next"].dtype:
        problems.append("denoise_step x and x_next differ in dtype")
    if step["sigma"].dtype != step["sigma_next"].dtype:
        problems.append("denoise_step sigma and sigma_next differ in dtype")
    decoder_in = tensors["vae_decoder"]["latent"]
    if decoder_in.shape[1:] != (z, h, h):
        problems.append(f"vae_decoder.latent has shape {list(decoder_in.shape)}, expected (n, {z}, {h}, {h})")

    # Fixed buffers: one per tensor, except chained tensors (one buffer under the bare name)
    # and the per-step ones (bound into the latents/sigmas slots).
    buffers: dict[str, BufferSpec] = {}
    bindings: dict[str, dict[str, str]] = {g: {} for g in GRAPH_NAMES}
    chained = {}
    for producer, consumer in CHAINS:
        for out in io[producer].outputs:
            name, into = out.name, io[consumer].input(out.name)
            if into is None:
                continue
            if (into.shape, into.dtype) != (out.shape, out.dtype):
                problems.append(f"{producer}.{name} {list(out.shape)} {out.dtype} does not fit "
                                f"{consumer}.{name} {list(into.shape)} {into.dtype}")
            chained[(producer, name)] = chained[(consumer, name)] = name
    context_outputs = io["context"].output_names
    unfed = [n for n in io["denoise_step"].input_names if ("context", n) not in chained and n not in STEP_INPUTS]
    if not context_outputs or unfed:
        problems.append(f"denoise_step inputs {unfed or 'attn2_*'} are not produced by the context engine")
    _check(problems, rebuild)

    for graph in GRAPH_NAMES:
        for name, spec in tensors[graph].items():
            if graph == "denoise_step" and name in STEP_LATENT + STEP_SIGMA:
                continue
            if graph == "vae_decoder":
                continue  # slot buffers below
            key = chained.get((graph, name), f"{graph}.{name}")
            buffers.setdefault(key, BufferSpec(key, spec.shape, spec.np_dtype))
            bindings[graph][name] = key
    chunk = decoder_in.shape[0]
    chunks = len(chunk_ranges(T, chunk))
    frames = tensors["vae_decoder"]["frames"]
    buffers["vae_decoder.latent"] = BufferSpec("vae_decoder.latent", decoder_in.shape, decoder_in.np_dtype,
                                               slots=chunks)
    buffers["vae_decoder.frames"] = BufferSpec("vae_decoder.frames", frames.shape, frames.np_dtype,
                                               slots=min(2, chunks))
    return BufferPlan(io=io, buffers=buffers, bindings=bindings, decode_chunk=chunk)


def step_addresses(latents_base: int, latent_slot_bytes: int, sigmas_base: int, sigma_slot_bytes: int,
                   steps: int) -> list[dict[str, int]]:
    """Device addresses of the four per-step tensors for steps 0..steps-1 (see module docstring)."""
    return [
        {
            "x": latents_base + i * latent_slot_bytes,
            "x_next": latents_base + (i + 1) * latent_slot_bytes,
            "sigma": sigmas_base + i * sigma_slot_bytes,
            "sigma_next": sigmas_base + (i + 1) * sigma_slot_bytes,
        }
        for i in range(steps)
    ]


def sigma_slots(sigmas: np.ndarray, spec: BufferSpec) -> np.ndarray:
    """The host image of the sigmas buffer: sigma_i at the start of slot i, padding zero."""
    per_slot = spec.slot_bytes // spec.dtype.itemsize
    host = np.zeros((spec.slots, per_slot), dtype=spec.dtype)
    host[:, 0] = np.asarray(sigmas, dtype=np.float64)
    return host


def decode_schedule(frames: int, chunk: int, out_slots: int) -> list[tuple[int, int, int, int]]:
    """(chunk index, start, stop, output slot) per decoder run; outputs alternate between slots."""
    return [(k, start, stop, k % out_slots) for k, (start, stop) in enumerate(chunk_ranges(frames, chunk))]


def first_non_finite(latents: np.ndarray) -> int | None:
    """Index of the first denoise step whose output slot holds NaN/inf. latents: (steps+1, ...)
    with slot 0 the initial noise, so step i wrote slot i + 1."""
    for i in range(1, len(latents)):
        if not np.isfinite(latents[i]).all():
            return i - 1
    return None


def runtime_cache_name(capability: tuple[int, int]) -> str:
    """TensorRT-RTX runtime cache file beside the engines: one per GPU architecture, since the
    kernels JIT-compiled into it are for that architecture only."""
    return f"runtime_cache.sm{capability[0]}{capability[1]}.bin"

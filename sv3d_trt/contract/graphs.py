"""The five graphs between export and runtime: their names and IO contract, declared here only.

    clip          image (1,3,S,S) in [-1,1]           -> clip_embedding (1,D)
    vae_encoder   image (1,3,S,S) in [-1,1]           -> latent (1,4,h,w), unscaled posterior mean
    vae_decoder   latent (n,4,h,w) (already / scale)  -> frames (n,3,S,S), raw decoder output
    context       clip_embedding (1,D)                -> attn2_00 .. attn2_31, each (2,C_i)
    denoise_step  x (T,4,h,w), sigma (1,), sigma_next (1,), concat_latent (1,4,h,w),
                  vector (T,adm), cfg_scales (T,), attn2_00 .. attn2_31 -> x_next (T,4,h,w)

Each graph maps onto one stage of the backend protocol (runtime/backend.py): `encode` =
clip + vae_encoder (the pipeline adds the 1e-5 cond_aug noise to the image first), `prepare`
= context (once per generation), `step` = denoise_step, `decode` = vae_decoder per chunk.
The context outputs carry the same names as the step inputs (`CHAINS`), so a runtime feeds
one into the other by name. attn2_i follows the fold order of models/fold.py.

Every graph input and output is float32 whatever the export precision: precision lives inside
the graph (strongly typed), so runtimes and calibration sets never depend on it.
Torch-free: the exporter (export/graphs.py) and every runtime read it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

GRAPH_NAMES = ("clip", "vae_encoder", "vae_decoder", "context", "denoise_step")
# (producer graph, consumer graph): outputs of the first feed same-named inputs of the second.
CHAINS = (("clip", "context"), ("context", "denoise_step"))
# The denoise step's inputs before the attn2_* values, and the two that change every step.
STEP_INPUTS = ("x", "sigma", "sigma_next", "concat_latent", "vector", "cfg_scales")
STEP_LATENT = ("x", "x_next")
STEP_SIGMA = ("sigma", "sigma_next")
# Tensors each graph has whatever the config (inputs, outputs); attn2_* follow the fold.
FIXED_IO = {
    "clip": (("image",), ("clip_embedding",)),
    "vae_encoder": (("image",), ("latent",)),
    "vae_decoder": (("latent",), ("frames",)),
    "context": (("clip_embedding",), ()),
    "denoise_step": (STEP_INPUTS, ("x_next",)),
}


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output. dtype is a numpy dtype name ("float32", "float16", ...)."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    # Range of values for sample inputs (tracing, tests): uniform in [low, high]; None = standard normal.
    sample_range: tuple[float, float] | None = None

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.np_dtype.itemsize

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, entry: dict) -> "TensorSpec":
        return cls(entry["name"], tuple(int(d) for d in entry["shape"]), entry["dtype"])


@dataclass(frozen=True)
class GraphIO:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def input(self, name: str) -> TensorSpec | None:
        return next((t for t in self.inputs if t.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        return next((t for t in self.outputs if t.name == name), None)

    def to_json(self) -> dict:
        return {"inputs": [t.to_json() for t in self.inputs], "outputs": [t.to_json() for t in self.outputs]}

    @classmethod
    def from_json(cls, name: str, entry: dict) -> "GraphIO":
        """From a record's "inputs"/"outputs" lists (export.json graphs, manifest.json engines)."""
        return cls(name, tuple(TensorSpec.from_json(t) for t in entry.get("inputs", [])),
                   tuple(TensorSpec.from_json(t) for t in entry.get("outputs", [])))


def attn2_input_names(count: int) -> list[str]:
    return [f"attn2_{i:02d}" for i in range(count)]


def graph_contracts(config, decode_chunk: int, attn2_widths: Sequence[int]) -> dict[str, GraphIO]:
    """The IO contract of every graph for an SV3DConfig; attn2_widths: C_i of the folded attn2
    outputs in fold order (export/graphs.py reads them off a meta-device UNet)."""
    T, S, h = config.num_frames, config.image_size, config.latent_size
    z, D, adm = config.vae.z_channels, config.unet.context_dim, config.unet.adm_in_channels
    image = TensorSpec("image", (1, 3, S, S), sample_range=(-1.0, 1.0))
    clip_embedding = TensorSpec("clip_embedding", (1, D))
    attn2 = tuple(TensorSpec(n, (2, c)) for n, c in zip(attn2_input_names(len(attn2_widths)), attn2_widths))
    step = {
        "x": TensorSpec("x", (T, z, h, h)),
        "sigma": TensorSpec("sigma", (1,), sample_range=(1.0, 10.0)),
        "sigma_next": TensorSpec("sigma_next", (1,), sample_range=(0.1, 0.9)),
        "concat_latent": TensorSpec("concat_latent", (1, z, h, h)),
        "vector": TensorSpec("vector", (T, adm)),
        "cfg_scales": TensorSpec("cfg_scales", (T,), sample_range=(1.0, 2.5)),
    }
    return {
        "clip": GraphIO("clip", (image,), (clip_embedding,)),
        "vae_encoder": GraphIO("vae_encoder", (image,), (TensorSpec("latent", (1, z, h, h)),)),
        "vae_decoder": GraphIO("vae_decoder", (TensorSpec("latent", (decode_chunk, z, h, h)),),
                               (TensorSpec("frames", (decode_chunk, 3, S, S)),)),
        "context": GraphIO("context", (clip_embedding,), attn2),
        "denoise_step": GraphIO("denoise_step", (*(step[n] for n in STEP_INPUTS), *attn2),
                                (TensorSpec("x_next", (T, z, h, h)),)),
    }

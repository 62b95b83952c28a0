"""Full-size networks with random weights made on the device, the check's inputs, and the
measurement helpers the UNet parts share.

No 9.4 GB checkpoint travels to the GPU machine: each network is built on the meta device,
given uninitialised storage on the target device (`to_empty`) and every tensor is drawn there
in place (`normal_`), scaled like `models.checkpoint.random_tensor` (fan-in for matrices and
kernels, gains around 1, small biases) so activations stay O(1) through 1.5 B parameters and
fp16 neither overflows nor underflows for reasons real weights would not have. A copy in
another dtype is built the same way and loaded from the first (one cast per tensor).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from sv3d_trt.bench.memory import MemoryMonitor
from sv3d_trt.cameras import COND_AUG, camera_vector, resolve_orbit
from sv3d_trt.models.checkpoint import DTYPES, build_module
from sv3d_trt.models.config import SV3DConfig
from sv3d_trt.runtime.backend import Conditioning
from sv3d_trt.sampler import edm_sigmas, initial_noise_scale, triangle_cfg_scales


def _draw_(name: str, t: torch.Tensor, generator: torch.Generator) -> None:
    """Fill one tensor in place: the scales of `random_tensor`, drawn on t's device."""
    t.normal_(generator=generator)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "mix_factor":
        return
    if "embedding" in leaf:  # CLIP's class and positional embeddings
        t.mul_(0.1)
        return
    if leaf == "proj":  # CLIP's output projection, used as x @ proj: fan-in is dim 0
        t.div_(math.sqrt(t.shape[0]))
        return
    if t.dim() <= 1:
        if leaf == "weight":  # norm gains
            t.mul_(0.1).add_(1.0)
        else:  # biases
            t.mul_(0.05)
        return
    t.div_(math.sqrt(t[0].numel()))  # fan-in of a Linear / Conv weight


def random_module(component: str, config: SV3DConfig, device: str, seed: int) -> nn.Module:
    """One network of `config` with every parameter and buffer drawn at random on `device` (fp32)."""
    with torch.device("meta"):
        module = build_module(component, config)
    module = module.to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict(keep_vars=True).items():
            if t.is_floating_point():
                _draw_(name, t.data, generator)
    return module.eval().requires_grad_(False)


def cast_copy(module: nn.Module, component: str, config: SV3DConfig, dtype: str) -> nn.Module:
    """A copy of `module` in `dtype` on its device, without a transient fp32 duplicate."""
    device = next(module.parameters()).device
    with torch.device("meta"):
        copy = build_module(component, config).to(DTYPES[dtype])
    copy = copy.to_empty(device=device)
    copy.load_state_dict(module.state_dict())  # copy_ casts tensor by tensor
    return copy.eval().requires_grad_(False)


def untouched_tensors(module: nn.Module) -> list[str]:
    """Names of tensors that look un-randomised: constant (std 0) or non-finite."""
    bad = []
    for name, t in module.state_dict().items():
        flat = t.detach().float().flatten()
        if not bool(torch.isfinite(flat).all()) or (flat.numel() > 1 and float(flat.std()) == 0.0):
            bad.append(name)
    return bad


def tensor_bytes(module: nn.Module) -> int:
    """Bytes of a module's distinct parameter and buffer storages."""
    seen = {}
    for t in (*module.parameters(), *module.buffers()):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(seen.values())


@dataclass
class CheckInputs:
    """Random inputs shared by every part: `rotate` buffers where a stage is timed repeatedly."""

    cond: Conditioning
    vector: np.ndarray  # (T, adm)
    cfg_scales: np.ndarray  # (T,)
    step_x: list[np.ndarray]  # (T, 4, h, w) at the mid-schedule noise level
    sigma: float
    sigma_next: float
    loop_noise: list[np.ndarray]  # (T, 4, h, w)
    decode_z: list[np.ndarray]  # (T, 4, h, w), already divided by the VAE scale

    @classmethod
    def draw(cls, config: SV3DConfig, steps: int, rotate: int, seed: int) -> CheckInputs:
        rng = np.random.default_rng(seed)
        T, h, z = config.num_frames, config.latent_size, config.vae.z_channels
        def batch(scale: float) -> list[np.ndarray]:
            return [np.float32(scale) * rng.standard_normal((T, z, h, h), dtype=np.float32) for _ in range(rotate)]

        sigmas = edm_sigmas(steps)
        mid = len(sigmas) // 2
        cond = Conditioning(
            clip_embedding=rng.standard_normal((1, config.unet.context_dim), dtype=np.float32),
            concat_latent=rng.standard_normal((1, z, h, h), dtype=np.float32),
            input_rgb=rng.integers(0, 256, (config.image_size, config.image_size, 3), dtype=np.uint8),
        )
        orbit = resolve_orbit(config.variant, None, num_frames=T, seed=seed)
        return cls(
            cond=cond,
            vector=camera_vector(config.variant, orbit, num_frames=T, cond_aug=COND_AUG).astype(np.float32),
            cfg_scales=triangle_cfg_scales(T).astype(np.float32),
            step_x=batch(initial_noise_scale(float(sigmas[mid]))),
            sigma=float(sigmas[mid]),
            sigma_next=float(sigmas[mid + 1]),
            loop_noise=batch(initial_noise_scale(float(sigmas[0]))),  # x0: denoise() takes it scaled
            decode_z=batch(1.0 / config.vae.scale_factor),
        )


@contextlib.contextmanager
def memory_scope(cuda: bool):
    """Peak memory of the block: MemoryMonitor's fields, plus on CUDA the peak of torch's
    allocator above what was allocated when the block began (the block's own memory)."""
    monitor = MemoryMonitor(use_gpu=cuda)
    record: dict = {}
    if cuda:
        torch.cuda.synchronize()
    monitor.start()
    start = torch.cuda.memory_allocated() if cuda else 0
    try:
        yield record
        if cuda:
            torch.cuda.synchronize()
        record.update(monitor.stop())
        if cuda:
            record["gpu_peak_above_start_bytes"] = torch.cuda.max_memory_allocated() - start
            record["gpu_held_above_start_bytes"] = torch.cuda.memory_allocated() - start  # still held at the end
    finally:
        monitor.close()


def gb(nbytes: float | None) -> str:
    return "n/a" if nbytes is None else f"{nbytes / 1e9:.1f} GB"


def own_peak(memory: dict, weights_before: int = 0) -> int | None:
    """A block's own peak: on CUDA its allocator peak above the start plus the weights it used
    that existed before; on a CPU the process's peak resident set (all it can say)."""
    above = memory.get("gpu_peak_above_start_bytes")
    if above is not None:
        return above + weights_before
    return memory.get("host_peak_rss_bytes", memory.get("host_process_peak_rss_bytes"))


def rate(flops_per_s: float) -> str:
    return f"{flops_per_s / 1e12:.1f} TFLOP/s" if flops_per_s >= 1e12 else f"{flops_per_s / 1e9:.1f} GFLOP/s"


@contextlib.contextmanager
def exact_fp32():
    """No TF32 anywhere (cuDNN enables it for convolutions by default): the fp32 reference."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / ||b|| in float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))

"""EDM sampler math for SV3D: sigma schedule, v-prediction preconditioning, triangle CFG, Euler step.

Pure functions with no hidden step index (so a denoise loop built on them traces and
graph-captures). They accept Python floats, numpy arrays and torch tensors alike: tensors go
through arithmetic operators and their own methods only, so this module never imports torch.
Every formula follows the reference sampler in generative-models (sv3d.md §5):
sgm/modules/diffusionmodules/{discretizer,denoiser_scaling,denoiser,guiders,sampling}.py.
"""
from __future__ import annotations

import math

import numpy as np


def edm_sigmas(num_steps: int = 50, sigma_min: float = 0.002, sigma_max: float = 700.0,
               rho: float = 7.0) -> np.ndarray:
    """Noise levels of EDMDiscretization (Karras et al. 2022, eq. 5) with a final 0 appended.

    sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, i = 0..n-1.
    Returns float64 (num_steps + 1,): 700.0, 620.33, ..., 0.002, 0.0. The reference evaluates
    the same formula in float32; casting these values to float32 agrees to within 1 ulp.
    """
    if num_steps < 2:
        raise ValueError(f"num_steps must be >= 2 (the ramp needs two ends), got {num_steps}")
    ramp = np.linspace(0.0, 1.0, num_steps, dtype=np.float64)
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return np.append(sigmas, 0.0)


def _log(x):
    """Natural log of a float, numpy array or tensor (tensors use their own .log())."""
    if isinstance(x, (int, float, np.ndarray, np.generic)):
        out = np.log(x)
        return float(out) if isinstance(x, (int, float)) else out
    return x.log()


def precondition(sigma):
    """VScalingWithEDMcNoise (sigma_data = 1, v-prediction): (c_skip, c_out, c_in, c_noise).

    c_skip = 1/(s^2+1), c_out = -s/sqrt(s^2+1), c_in = 1/sqrt(s^2+1), c_noise = 0.25 ln s.
    """
    s2p1 = sigma * sigma + 1.0
    root = s2p1 ** 0.5
    c_skip = 1.0 / s2p1
    c_out = -sigma / root
    c_in = 1.0 / root
    c_noise = 0.25 * _log(sigma)
    return c_skip, c_out, c_in, c_noise


def denoised_from_output(x, model_output, sigma):
    """D(x; sigma) = F(c_in x, c_noise) c_out + x c_skip (sgm Denoiser.forward), given F's output."""
    c_skip, c_out, _, _ = precondition(sigma)
    return model_output * c_out + x * c_skip


def triangle_cfg_scales(num_frames: int = 21, min_scale: float = 1.0,
                        max_scale: float = 2.5) -> np.ndarray:
    """Per-frame guidance scale of TrianglePredictionGuider (period 1): float64 (T,).

    v_j = linspace(0, 1, T), tri(v) = 2 |v - floor(v + 0.5)|, scale_j = min + (max - min) tri(v_j):
    1.00 at frame 0, 2.50 at frame 10, 1.00 at frame 20 (the input view) for T = 21.
    """
    v = np.linspace(0.0, 1.0, num_frames, dtype=np.float64)
    tri = 2.0 * np.abs(v - np.floor(v + 0.5))
    return min_scale + (max_scale - min_scale) * tri


def cfg_combine(d_uncond, d_cond, scales_per_frame):
    """Guided denoised prediction D_u + s_j (D_c - D_u), per frame j.

    d_uncond, d_cond: (T, C, H, W) denoised (x0) predictions of the two batch halves.
    scales_per_frame: (T,) numpy array or tensor; broadcast as (T, 1, 1, 1).
    """
    s = scales_per_frame
    if hasattr(d_cond, "new_tensor") and not hasattr(s, "new_tensor"):
        s = d_cond.new_tensor(np.asarray(s))  # a tensor on the prediction's device and dtype
    elif isinstance(d_cond, np.ndarray):
        s = np.asarray(s, dtype=d_cond.dtype)  # keep float32 predictions in float32
    s = s.reshape(-1, 1, 1, 1)  # (T, 1, 1, 1)
    return d_uncond + s * (d_cond - d_uncond)


def _where(condition, a, b):
    """a where `condition` else b, for a host bool, a numpy array or a tensor condition."""
    if isinstance(condition, (bool, np.bool_)):  # host scalars (edm_sigmas floats): nothing to sync
        return a if condition else b
    if isinstance(condition, np.ndarray):
        return np.where(condition, a, b)
    return a.where(condition, b)  # a device tensor: an elementwise select, no host read


def euler_step(x, denoised, sigma, sigma_next):
    """One EulerEDMSampler step with s_churn = 0: x + (sigma_next - sigma) (x - D)/sigma.

    sigma, sigma_next: Python floats, numpy scalars/arrays or tensors (0-d or (1,)); a tensor
    sigma_next is never read on the host, so the step traces to ONNX and captures in a CUDA graph.

    At sigma_next == 0 the formula equals D up to rounding (measured 5e-8 relative, 5e-7 max abs
    on the tiny config); we return `denoised` exactly (the reference evaluates the formula, so its
    last step differs from D by float rounding). sigma > 0 always, so the discarded branch of a
    tensor select never divides by zero.
    """
    stepped = x + (sigma_next - sigma) * ((x - denoised) / sigma)
    return _where(sigma_next == 0, denoised, stepped)


def guided_euler_step(x, denoised_uncond, denoised_cond, sigma, sigma_next, cfg_scales):
    """One CFG-guided Euler step of the SV3D sampler: triangle CFG, then the Euler update.

    x:                (T, C, H, W) float32 latent x_t
    denoised_uncond:  (T, C, H, W) D(x_t; sigma) of the unconditional half (CLIP and concat zeroed)
    denoised_cond:    (T, C, H, W) D(x_t; sigma) of the conditional half
    sigma, sigma_next: the step's noise levels: floats, or 0-d/(1,) tensors/arrays (kept on device)
    cfg_scales:       (T,) or (T, 1, 1, 1) per-frame guidance (triangle_cfg_scales)
    Returns x_{t+1} (T, C, H, W): D_u + s_j (D_c - D_u) stepped from sigma to sigma_next.

    Torch tensors or numpy arrays alike, with no host sync: the two halves may come from one
    batched UNet call or from two processes (CFG-parallel); every backend's step ends here.
    """
    return euler_step(x, cfg_combine(denoised_uncond, denoised_cond, cfg_scales), sigma, sigma_next)


def initial_noise_scale(sigma0: float) -> float:
    """The reference scales N(0, I) by sqrt(1 + sigma_0^2), not sigma_0 (sampling.py prepare_sampling_loop)."""
    return math.sqrt(1.0 + float(sigma0) ** 2)

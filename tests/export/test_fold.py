"""The cross-attention fold equals the unfolded UNet, and its FLOP count matches the architecture."""
from __future__ import annotations

import pytest
import torch

from sv3d_trt.models.attention import CrossAttention
from sv3d_trt.models.checkpoint import load_checkpoint
from sv3d_trt.models.config import get_config
from sv3d_trt.models.fold import (
    FoldedCrossAttention,
    attn2_modules,
    attn2_names,
    fold_cross_attention,
    fold_flops_removed,
    folded_context,
)
from tests.conftest import rel_err


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/export/conftest.py


@pytest.fixture(scope="module")
def unet(tiny_checkpoint):
    return load_checkpoint(tiny_checkpoint, components=("unet",)).unet


def _inputs(unet, dtype, seed=0):
    cfg = unet.config
    T, h = cfg.num_frames, 8
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2 * T, cfg.in_channels, h, h, generator=g)
    t = torch.randn(2 * T, generator=g)
    y = torch.randn(2 * T, cfg.adm_in_channels, generator=g)
    clip = torch.randn(1, cfg.context_dim, generator=g)
    # The sampler's CFG batch: T uncond rows with a zero context, then T cond rows.
    context = torch.cat([torch.zeros_like(clip).expand(T, -1), clip.expand(T, -1)])[:, None]
    return [a.to(dtype) for a in (x, t, context, y, clip)]


def test_fold_fp32(unet):
    """End to end in fp32 the only difference is GEMM rounding (to_out on 2 rows instead of 2T*L
    rows: a few ulp per attn2 output), amplified by the random-weight UNet. Measured on this
    machine: 8.4e-7 .. 9.7e-7 over 4 seeds. The yardstick is the model's own fp32 floor: a
    one-ulp perturbation of x moves the output by 1.7e-6; the fold must move it less."""
    x, t, context, y, clip = _inputs(unet, torch.float32)
    g = torch.Generator().manual_seed(1)
    x_ulp = x * (1 + 2.0**-24 * (2 * torch.randint(0, 2, x.shape, generator=g) - 1))  # +-1 ulp
    with torch.no_grad():
        ref = unet(x, t, context, y)
        out = fold_cross_attention(unet)(x, t, y, folded_context(unet, clip))
        floor = rel_err(unet(x_ulp, t, context, y), ref)
    assert ref.abs().mean() > 0.1  # non-trivial output
    err = rel_err(out, ref)
    assert err <= floor and err <= 2e-6


def test_every_attn2_output_is_its_folded_value(unet):
    """The claim itself, per module, in fp64: during a real forward of the plain UNet every attn2
    returns to_out(to_v(ctx)) of its video for every query token (softmax over one key is 1)."""
    unet.double()
    x, t, context, y, clip = _inputs(unet, torch.float64)
    outputs = {}
    hooks = [m.register_forward_hook(lambda mod, args, out, name=name: outputs.__setitem__(name, out))
             for name, m in attn2_modules(unet).items()]
    with torch.no_grad():
        unet(x, t, context, y)
        values = folded_context(unet, clip)
    for hook in hooks:
        hook.remove()
    T = unet.config.num_frames
    assert len(outputs) == len(values) == 32
    for (name, out), v in zip(outputs.items(), values):
        expected = v.repeat_interleave(T, dim=0)[:, None, :].expand_as(out)  # (2T, L, C): rows by video
        assert (out - expected).abs().max() <= 1e-14 * expected.abs().max(), name
    unet.float()


def test_folded_values_layout(unet):
    values = folded_context(unet, torch.randn(1, unet.config.context_dim))
    modules = list(attn2_modules(unet).values())
    assert len(values) == len(modules) == 32
    names = attn2_names(unet)
    assert names[0].endswith("transformer_blocks.0.attn2") and names[1].endswith("time_stack.0.attn2")
    for v, attn in zip(values, modules):
        assert v.shape == (2, attn.to_out[0].out_features)
        # The uncond row sees context 0: to_out(to_v(0)) = to_out.0.bias exactly.
        torch.testing.assert_close(v[0], attn.to_out[0].bias, rtol=0, atol=0)
        assert not torch.equal(v[1], v[0])


def test_fold_copy_shares_weights_and_leaves_original(unet):
    folded = fold_cross_attention(unet)
    assert all(isinstance(m, CrossAttention) for m in attn2_modules(unet).values())
    assert sum(isinstance(m, FoldedCrossAttention) for m in folded.modules()) == 32
    original = {id(p) for p in unet.parameters()}
    assert all(id(p) in original for p in folded.parameters())
    assert attn2_names(folded) == attn2_names(unet)


def _analytic_flops(name: str) -> int:
    """Independent count from the config alone: attention sites per level and their token grids."""
    cfg = get_config(name)
    u, T = cfg.unet, cfg.num_frames
    sites = []  # (tokens per frame, channels)
    for level, mult in enumerate(u.channel_mult):
        if level in u.attention_levels:
            side = cfg.latent_size // 2**level
            sites += [(side * side, mult * u.model_channels)] * (2 * u.num_res_blocks + 1)  # down + up blocks
    side = cfg.latent_size // 2 ** (len(u.channel_mult) - 1)
    sites.append((side * side, u.channel_mult[-1] * u.model_channels))  # middle block
    total = 0
    for length, c in sites:
        n, heads, d = 2 * T, c // u.num_head_channels, u.context_dim
        q = n * length
        one = 2 * q * c * c + 2 * 2 * n * d * c + 2 * q * c + q * heads * 6 + 2 * q * c + 2 * q * c * c + q * c
        total += 2 * one  # spatial + temporal attn2
    return total


@pytest.mark.parametrize("name", ["tiny", "full"])
def test_fold_flops(name):
    flops = fold_flops_removed(get_config(name))
    assert len(flops["per_module"]) == 32
    assert all(m["rows"] == 42 for m in flops["per_module"].values())
    assert flops["per_step"] == _analytic_flops(name)
    if name == "full":
        assert flops["per_step"] == 2_730_581_330_400  # 2.73 TFLOP per step

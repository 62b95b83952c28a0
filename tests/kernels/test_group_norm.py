"""Fused GroupNorm(+SiLU) vs its plain-torch reference, on Triton's CPU interpreter.

Layouts the UNet produces: NCHW, channels-last, the temporal ResBlock's (B, C, T, H, W) view of a
channels-last activation (groups pooled over T frames), and a non-flattenable slice (copied
first). Odd sizes: 5 channels per group, 7x5 and 9x9 maps, 21 and 5 frames; with and without
the pre-norm bias and the SiLU. Tolerances per dtype in fused_interpret.TOL.
"""
from __future__ import annotations

import pytest
import torch
from fused_interpret import DTYPES, assert_close, child_main, compare, interpreted_suite

from sv3d_trt.kernels import fused_ops
from sv3d_trt.kernels import group_norm as gn


def case(dtype="float32", layout="nchw", n=3, c=20, groups=4, h=7, w=5, frames=1, silu=True, bias=True):
    c_ = {"dtype": dtype, "layout": layout, "n": n, "c": c, "groups": groups, "h": h, "w": w, "frames": frames, "silu": silu, "bias": bias}
    c_["id"] = "{dtype}-{layout}-n{n}-c{c}-g{groups}-{h}x{w}-t{frames}-silu{silu}-bias{bias}".format(**c_)
    return c_


CASES = [case(dt, layout) for dt in DTYPES for layout in ("nchw", "channels_last")] + [
    case(layout="video", n=2, frames=21, h=3, w=4),
    case("float16", layout="video", n=2, frames=5, c=12, groups=3, h=9, w=9),
    case(layout="video", n=1, frames=5, silu=False, bias=False),
    case(layout="sliced", silu=False),
    case(c=12, groups=3, h=1, w=1, bias=False),
    case("bfloat16", layout="channels_last", c=32, groups=32, h=9, w=9),
]


def make_inputs(c: dict, seed: int = 0):
    """x in the case's layout, weight, bias, bias_in (N, C, K) or None."""
    g = torch.Generator().manual_seed(seed)
    dtype = DTYPES[c["dtype"]]
    ch, h, w = c["c"], c["h"], c["w"]
    if c["layout"] == "video":  # (B, C, T, H, W) view of a channels-last (B*T, C, H, W)
        b, t = c["n"], c["frames"]
        x = (torch.randn(b * t, ch, h, w, generator=g) + 0.5).to(dtype).to(memory_format=torch.channels_last)
        x = x.view(b, t, ch, h, w).transpose(1, 2)
        k = t
    elif c["layout"] == "sliced":
        x = torch.randn(c["n"], ch, 2 * h, w, generator=g).to(dtype)[:, :, ::2]  # rows 2W apart: no flat axis
        k = 1
    else:
        x = torch.randn(c["n"], ch, h, w, generator=g).to(dtype)
        if c["layout"] == "channels_last":
            x = x.to(memory_format=torch.channels_last)
        k = 1
    weight = (1 + 0.1 * torch.randn(ch, generator=g)).to(dtype)
    bias = (0.1 * torch.randn(ch, generator=g)).to(dtype)
    bias_in = torch.randn(x.shape[0], ch, k, generator=g).to(dtype) if c["bias"] else None
    return x, weight, bias, bias_in


def measure(c: dict) -> dict:
    x, w, b, bias_in = make_inputs(c)
    out = gn.group_norm_triton(x, w, b, c["groups"], 1e-6, c["silu"], bias_in)
    ref = gn.reference(x.float(), w.float(), b.float(), c["groups"], 1e-6, c["silu"],
                       None if bias_in is None else bias_in.float())
    assert out.shape == x.shape and out.dtype == x.dtype
    if gn.flat_spatial_stride(x) is not None:
        assert out.stride() == x.stride(), (out.stride(), x.stride())  # layout kept
    else:
        assert out.is_contiguous()
    return compare(out, ref)


results, test_kernel_matches_reference = interpreted_suite(__file__, CASES)


def test_reference_is_groupnorm32_silu_of_the_sum():
    """The reference equals the model's own GroupNorm32 -> SiLU after the emb add (fp32)."""
    from sv3d_trt.models.unet_blocks import GroupNorm32

    x, w, b, bias_in = make_inputs(case(layout="video", n=2, frames=5))
    norm = GroupNorm32(4, 20)
    norm.weight.data, norm.bias.data = w, b
    expected = torch.nn.functional.silu(norm(x + bias_in[..., None, None]))
    torch.testing.assert_close(gn.reference(x, w, b, 4, 1e-5, True, bias_in), expected, rtol=1e-6, atol=1e-6)


def test_flat_spatial_stride():
    x = torch.randn(2, 6, 3, 4)
    assert gn.flat_spatial_stride(x) == 1
    assert gn.flat_spatial_stride(x.to(memory_format=torch.channels_last)) == 6
    assert gn.flat_spatial_stride(x[..., ::2]) == 2
    assert gn.flat_spatial_stride(x[:, :, ::2]) is None


def test_bad_shapes_are_refused():
    x, w, b, _ = make_inputs(case())
    with pytest.raises(ValueError, match="groups"):
        gn.group_norm_triton(x, w, b, 3, 1e-6)
    with pytest.raises(ValueError, match="bias_in"):
        gn.group_norm_triton(x, w, b, 4, 1e-6, bias_in=torch.randn(3, 20, 4))


def test_custom_op_registration():
    x, w, b, bias_in = make_inputs(case(layout="channels_last"))
    torch.library.opcheck(torch.ops.sv3d_trt.group_norm.default, (x, w, b, 4, 1e-6, True, bias_in))
    auto = fused_ops.group_norm(x, w, b, 4, 1e-6, silu=True, bias_in=bias_in)
    torch.testing.assert_close(auto, gn.reference(x, w, b, 4, 1e-6, True, bias_in), rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("c", CASES, ids=lambda c: c["id"])
def test_cuda_kernel(c):
    x, w, b, bias_in = (t if t is None else t.cuda() for t in make_inputs(c))
    out = fused_ops.group_norm(x, w, b, c["groups"], 1e-6, c["silu"], bias_in)
    ref = gn.reference(x.float(), w.float(), b.float(), c["groups"], 1e-6, c["silu"],
                       None if bias_in is None else bias_in.float())
    assert_close(c["id"], c["dtype"], compare(out, ref))


if __name__ == "__main__":
    child_main(measure)

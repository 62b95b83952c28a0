"""Fused spatial/temporal blend (+ folded residual) vs its plain-torch reference, on Triton's
CPU interpreter: contiguous, channels-last, the (B, C, T, H, W) channels-last-3d view, and mixed
layouts (copied first); with and without the residual; odd element counts.
"""
from __future__ import annotations

import pytest
import torch
from fused_interpret import DTYPES, assert_close, child_main, compare, interpreted_suite

from sv3d_trt.kernels import blend as bl
from sv3d_trt.kernels import fused_ops


def case(dtype="float32", layout="contiguous", residual=True, shape=(3, 10, 7, 5)):
    c_ = {"dtype": dtype, "layout": layout, "residual": residual, "shape": list(shape)}
    c_["id"] = "{dtype}-{layout}-res{residual}-".format(**c_) + "x".join(map(str, shape))
    return c_


CASES = [case(dt, layout) for dt in DTYPES for layout in ("contiguous", "channels_last")] + [
    case(layout="video", shape=(2, 6, 21, 3, 4)),
    case("float16", layout="video", residual=False, shape=(1, 6, 5, 9, 9)),
    case(layout="mixed"),
    case(layout="contiguous", residual=False, shape=(42, 17, 6)),
]


def make_inputs(c: dict, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    dtype = DTYPES[c["dtype"]]
    shape = c["shape"]

    def one(i):
        if c["layout"] == "video":  # (B, C, T, H, W) view of a channels-last (B*T, C, H, W)
            b, ch, t, h, w = shape
            x = torch.randn(b * t, ch, h, w, generator=g).to(dtype).to(memory_format=torch.channels_last)
            return x.view(b, t, ch, h, w).transpose(1, 2)
        x = torch.randn(*shape, generator=g).to(dtype)
        if c["layout"] == "channels_last" or (c["layout"] == "mixed" and i == 1):
            x = x.to(memory_format=torch.channels_last)
        return x

    s, t, r = one(0), one(1), one(2)
    alpha = torch.sigmoid(torch.randn(1, generator=g)).to(dtype)
    return s, t, alpha, (r if c["residual"] else None)


def measure(c: dict) -> dict:
    s, t, alpha, r = make_inputs(c)
    out = bl.blend_triton(s, t, alpha, r)
    assert out.shape == s.shape and out.dtype == s.dtype
    if c["layout"] != "mixed":
        assert out.stride() == s.stride()
    ref = bl.reference(s.float(), t.float(), alpha.float(), None if r is None else r.float())
    return compare(out, ref)


results, test_kernel_matches_reference = interpreted_suite(__file__, CASES)


def test_reference_is_the_alpha_blender_of_a_resblock():
    """reference(s, h, a, residual=s) is AlphaBlender(s, skip(s) + h), bit for bit."""
    from sv3d_trt.models.unet_blocks import AlphaBlender

    s, h, _, _ = make_inputs(case())
    mixer = AlphaBlender()
    mixer.mix_factor.data.fill_(0.3)
    alpha = torch.sigmoid(mixer.mix_factor)
    torch.testing.assert_close(bl.reference(s, h, alpha, s), mixer(s, s + h), rtol=0, atol=0)


def test_dense():
    x = torch.randn(2, 3, 4, 5)
    assert bl.is_dense(x) and bl.is_dense(x.to(memory_format=torch.channels_last)) and bl.is_dense(x.transpose(0, 3))
    assert not bl.is_dense(x[..., ::2])


def test_custom_op_registration():
    s, t, alpha, r = make_inputs(case(layout="mixed"))
    torch.library.opcheck(torch.ops.sv3d_trt.blend.default, (s, t, alpha, r))
    torch.testing.assert_close(fused_ops.blend(s, t, alpha, r), bl.reference(s, t, alpha, r), rtol=0, atol=0)
    with pytest.raises(ValueError, match="share shape"):
        bl.blend_triton(s, t[:1], alpha)


@pytest.mark.gpu
@pytest.mark.parametrize("c", CASES, ids=lambda c: c["id"])
def test_cuda_kernel(c):
    s, t, alpha, r = (x if x is None else x.cuda() for x in make_inputs(c))
    ref = bl.reference(s.float(), t.float(), alpha.float(), None if r is None else r.float())
    assert_close(c["id"], c["dtype"], compare(fused_ops.blend(s, t, alpha, r), ref))


if __name__ == "__main__":
    child_main(measure)

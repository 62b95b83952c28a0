"""Fused GEGLU gate vs its plain-torch reference, on Triton's CPU interpreter.

Widths 2D for D = 40, 100 (not powers of two), 1280 (the full model's first level, 4 x 320),
odd row counts, contiguous and as a row-strided view.
"""
from __future__ import annotations

import pytest
import torch
from fused_interpret import DTYPES, assert_close, child_main, compare, interpreted_suite

from sv3d_trt.kernels import fused_ops
from sv3d_trt.kernels import geglu as gg


def case(dtype="float32", rows=21, tokens=13, d=40, strided=False):
    c_ = {"dtype": dtype, "rows": rows, "tokens": tokens, "d": d, "strided": strided}
    c_["id"] = "{dtype}-{rows}x{tokens}x{d}-strided{strided}".format(**c_)
    return c_


CASES = [case(dt) for dt in DTYPES] + [
    case(d=100, strided=True),
    case("float16", rows=2, tokens=9, d=1280),
    case("bfloat16", rows=3, tokens=7, d=100, strided=True),
]


def make_inputs(c: dict, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    dtype = DTYPES[c["dtype"]]
    h = (2 * torch.randn(c["rows"], c["tokens"] * (2 if c["strided"] else 1), 2 * c["d"], generator=g)).to(dtype)
    return h[:, ::2] if c["strided"] else h


def measure(c: dict) -> dict:
    h = make_inputs(c)
    out = gg.geglu_triton(h)
    assert out.shape == (*h.shape[:-1], c["d"]) and out.dtype == h.dtype
    return compare(out, gg.reference(h.float()))


results, test_kernel_matches_reference = interpreted_suite(__file__, CASES)


def test_reference_is_the_models_geglu():
    from sv3d_trt.models.attention import GEGLU

    torch.manual_seed(0)
    layer = GEGLU(24, 40)
    x = torch.randn(5, 7, 24)
    torch.testing.assert_close(gg.reference(layer.proj(x)), layer(x), rtol=0, atol=0)


def test_custom_op_registration():
    h = make_inputs(case(strided=True))
    torch.library.opcheck(torch.ops.sv3d_trt.geglu.default, (h,))
    torch.testing.assert_close(fused_ops.geglu(h), gg.reference(h), rtol=0, atol=0)
    with pytest.raises(ValueError, match="even"):
        gg.geglu_triton(h[..., 1:])


@pytest.mark.gpu
@pytest.mark.parametrize("c", CASES, ids=lambda c: c["id"])
def test_cuda_kernel(c):
    h = make_inputs(c).cuda()
    assert_close(c["id"], c["dtype"], compare(fused_ops.geglu(h), gg.reference(h.float())))


if __name__ == "__main__":
    child_main(measure)

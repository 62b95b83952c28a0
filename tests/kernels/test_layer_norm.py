"""Fused LayerNorm vs its plain-torch reference, on Triton's CPU interpreter.

Token streams (B*T, H*W, C) at odd widths (24, 40, 320 = the full model's first level, 1280 =
its deepest) and odd row counts, contiguous and as a strided column slice of a wider tensor.
"""
from __future__ import annotations

import pytest
import torch
from fused_interpret import DTYPES, assert_close, child_main, compare, interpreted_suite

from sv3d_trt.kernels import fused_ops
from sv3d_trt.kernels import layer_norm as ln


def case(dtype="float32", rows=21, tokens=13, c=40, sliced=False):
    c_ = {"dtype": dtype, "rows": rows, "tokens": tokens, "c": c, "sliced": sliced}
    c_["id"] = "{dtype}-{rows}x{tokens}x{c}-sliced{sliced}".format(**c_)
    return c_


CASES = [case(dt) for dt in DTYPES] + [
    case(c=24, sliced=True),
    case("float16", rows=2, tokens=81, c=320, sliced=True),
    case(rows=3, tokens=5, c=1280),
    case("bfloat16", rows=1, tokens=1, c=1280),
]


def make_inputs(c: dict, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    dtype = DTYPES[c["dtype"]]
    width = 2 * c["c"] + 3 if c["sliced"] else c["c"]
    x = (torch.randn(c["rows"], c["tokens"], width, generator=g) * 2 + 0.3).to(dtype)[..., : c["c"]]
    weight = (1 + 0.1 * torch.randn(c["c"], generator=g)).to(dtype)
    bias = (0.1 * torch.randn(c["c"], generator=g)).to(dtype)
    return x, weight, bias


def measure(c: dict) -> dict:
    x, w, b = make_inputs(c)
    out = ln.layer_norm_triton(x, w, b, 1e-5)
    assert out.shape == x.shape and out.dtype == x.dtype
    return compare(out, ln.reference(x.float(), w.float(), b.float(), 1e-5))


results, test_kernel_matches_reference = interpreted_suite(__file__, CASES)


def test_reference_is_nn_layernorm():
    x, w, b = make_inputs(case(sliced=True))
    norm = torch.nn.LayerNorm(40)
    norm.weight.data, norm.bias.data = w, b
    torch.testing.assert_close(ln.reference(x, w, b, 1e-5), norm(x), rtol=0, atol=0)


def test_custom_op_registration():
    x, w, b = make_inputs(case(sliced=True))
    torch.library.opcheck(torch.ops.sv3d_trt.layer_norm.default, (x, w, b, 1e-5))
    torch.testing.assert_close(fused_ops.layer_norm(x, w, b, 1e-5), ln.reference(x, w, b, 1e-5), rtol=0, atol=0)
    with pytest.raises(ValueError, match="weight/bias"):
        ln.layer_norm_triton(x, w[:-1], b, 1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("c", CASES, ids=lambda c: c["id"])
def test_cuda_kernel(c):
    x, w, b = (t.cuda() for t in make_inputs(c))
    out = fused_ops.layer_norm(x, w, b, 1e-5)
    assert_close(c["id"], c["dtype"], compare(out, ln.reference(x.float(), w.float(), b.float(), 1e-5)))


if __name__ == "__main__":
    child_main(measure)

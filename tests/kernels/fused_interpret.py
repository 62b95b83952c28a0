"""Shared by the fused-kernel tests: run a test module's cases on Triton's CPU interpreter.

TRITON_INTERPRET is read once, when Triton is imported, and then holds for the whole process,
so interpreted cases run in a child process (the test module itself, as a script) and never
leak the setting into other tests.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# max|kernel - ref| / max|ref| against an fp32 reference on the same rounded inputs: fp32 is exact
# up to summation order; fp16/bf16 add one rounding of the output (10 and 7 mantissa bits).
TOL = {"float32": 1e-5, "float16": 2e-3, "bfloat16": 1e-2}


def run_interpreted(script: str, cases: list[dict]) -> dict:
    """Run `script` (a test module whose __main__ measures `cases`) under TRITON_INTERPRET=1."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, script, json.dumps(cases)], check=False, env=env, capture_output=True, text=True,
                          timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare(out: torch.Tensor, ref: torch.Tensor) -> dict:
    """Relative max error of `out` against the fp32 reference `ref`, plus its size (non-triviality)."""
    err = ((out.float() - ref).abs().max() / ref.abs().max()).item()
    return {"err": err, "ref_max": ref.abs().max().item(), "ref_std": ref.float().std().item()}


def assert_close(case_id: str, dtype: str, result: dict) -> None:
    assert result["ref_max"] > 0.1 and result["ref_std"] > 0.01, result  # a non-trivial output first
    assert result["err"] <= TOL[dtype], f"{case_id}: rel err {result['err']:.2e} > {TOL[dtype]:.0e}"


def interpreted_suite(script: str, cases: list[dict]):
    """(module fixture `results`, parametrized test) for a test module: all `cases` run once in one
    interpreted child process, then each is checked against its reference. Bind both at module level:
    `results, test_kernel_matches_reference = interpreted_suite(__file__, CASES)`."""

    @pytest.fixture(scope="module")
    def results():
        return run_interpreted(script, cases)

    @pytest.mark.parametrize("c", cases, ids=lambda c: c["id"])
    def test_kernel_matches_reference(results, c):
        assert_close(c["id"], c["dtype"], results[c["id"]])

    return results, test_kernel_matches_reference


def child_main(measure) -> None:
    """__main__ of a test module run by `run_interpreted`: measure every case, print JSON."""
    from sv3d_trt.kernels.temporal_attention_kernel import interpreted

    assert interpreted(), "run with TRITON_INTERPRET=1"
    torch.set_num_threads(2)
    cases = json.loads(sys.argv[1])
    print(json.dumps({c["id"]: measure(c) for c in cases}))

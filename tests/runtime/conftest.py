"""A tiny fp32 ONNX export of the session's tiny checkpoint, made once (about a minute on 2 cores)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_onnx_dir(tmp_path_factory, tiny_checkpoint):
    pytest.importorskip("onnxruntime")
    from sv3d_trt.export.onnx_export import export_checkpoint

    out = tmp_path_factory.mktemp("onnx") / "tiny_sv3d_p"
    export_checkpoint(tiny_checkpoint, out, precision="fp32")
    return out

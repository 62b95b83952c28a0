"""The backend lifecycle of the protocol (runtime/backend.py): device, warmup, synchronize,
close, context-manager use; the Pipeline delegates to it. CPU backends here; the TensorRT
path's close (graphs, buffers, contexts, runtime cache) runs in test_trt_runner on a GPU."""
from __future__ import annotations

import numpy as np
import pytest

from sv3d_trt.runtime import Pipeline


def test_pipeline_warms_up_generates_and_closes_its_backend(tiny_checkpoint, example_image):
    with Pipeline.from_checkpoint(tiny_checkpoint) as pipe:
        pipe.warmup(steps=2, decode_chunk=7)
        pipe.backend.synchronize()
        result = pipe.generate(example_image, seed=3, steps=2)
        assert str(pipe.backend.device) == "cpu" and pipe.backend.noise_device == "cpu"
        assert result.noise_source == "torch-cpu" and result.latent.std() > 0.1
    assert pipe.backend.models is None  # the weights were dropped on exit
    pipe.close()  # idempotent


def test_ort_backend_lifecycle(tiny_onnx_dir):
    from sv3d_trt.runtime.ort import OrtBackend

    with OrtBackend(tiny_onnx_dir, device="cpu", threads=1) as backend:
        backend.warmup(steps=2, decode_chunk=7)
        assert backend.device == "cpu" and backend.noise_device == "cpu" and len(backend.sessions) == 5
    assert backend.sessions == {}
    backend.close()
    image = np.random.default_rng(0).uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32)
    with pytest.raises(KeyError):  # a closed backend holds no sessions any more
        backend.encode(image, image)

"""CFG-parallel (two gloo ranks on the CPU) equals the single batch-42 torch-eager step."""
from __future__ import annotations

import multiprocessing

import numpy as np
import pytest

from tests.conftest import rel_err

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def parallel_pipeline(tiny_checkpoint):
    """Rank 0 in this process, rank 1 in a spawned one; both on the tiny checkpoint."""
    from sv3d_trt.runtime import Pipeline
    from sv3d_trt.serve.cfg_parallel import CfgParallelBackend, free_port, run_follower

    init_method = f"tcp://127.0.0.1:{free_port()}"
    follower = multiprocessing.get_context("spawn").Process(target=run_follower, args=(str(tiny_checkpoint), init_method))
    follower.start()
    backend = CfgParallelBackend.from_checkpoint(tiny_checkpoint).join(0, init_method, timeout_s=120)
    yield Pipeline(backend)
    backend.shutdown()
    follower.join(timeout=60)
    assert follower.exitcode == 0


def test_cfg_parallel_equals_single_batch(parallel_pipeline, tiny_checkpoint, example_image):
    from sv3d_trt.runtime import Pipeline

    torch.manual_seed(0)
    seed = int(torch.randint(0, 2**31 - 1, ()))  # fresh noise each run
    single = Pipeline.from_checkpoint(tiny_checkpoint).generate(example_image, seed=seed, steps=4)
    parallel = parallel_pipeline.generate(example_image, seed=seed, steps=4)
    assert rel_err(parallel.latent, single.latent) <= 1e-5
    assert np.abs(parallel.frames.astype(int) - single.frames.astype(int)).max() <= 1
    assert parallel_pipeline.backend.describe()["process_group"] == "gloo"


def test_cancel_between_steps_keeps_ranks_in_step(parallel_pipeline, example_image):
    """A generation stopped from on_step leaves rank 1 ready for the next one."""
    from sv3d_trt.errors import JobCancelled

    def cancel_at_second(i):
        if i == 1:
            raise JobCancelled("cancelled")

    with pytest.raises(JobCancelled):
        parallel_pipeline.generate(example_image, seed=3, steps=6, on_step=cancel_at_second)
    result = parallel_pipeline.generate(example_image, seed=3, steps=2)
    assert np.isfinite(result.latent).all() and result.latent.std() > 0

"""Coarse-to-fine plan and early stop of the mesh fit."""
import random

import pytest

from sv3d_trt.errors import MeshError
from sv3d_trt.mesh import QUALITY, quality_config
from sv3d_trt.mesh.optimize import FitConfig
from sv3d_trt.mesh.schedule import LEVEL_STEP, Convergence, plan, step_cost


def test_plan_rises_in_level_steps_then_holds_the_final_resolution():
    config = FitConfig(iters=200, coarse_resolution=128, coarse_fraction=0.6)
    steps = plan(config, 256)
    assert len(steps) == 200 and steps[0] == 128 and steps == sorted(steps)
    assert set(steps) == {128, 160, 192, 224, 256} and all(r % LEVEL_STEP == 0 for r in steps)
    assert steps[119] < 256 and set(steps[120:]) == {256}
    assert plan(FitConfig(iters=50, coarse_resolution=None), 96) == [96] * 50
    assert plan(FitConfig(iters=50, coarse_resolution=512), 96) == [96] * 50  # never above the final one


def test_convergence_waits_for_a_flat_loss():
    rng = random.Random(3)
    falling, flat = Convergence(10, 0.01), Convergence(10, 0.01)
    for i in range(40):
        falling.add(1.0 / (1 + 0.1 * i) * (1 + 0.002 * rng.random()))
        flat.add(0.5 * (1 + 0.002 * rng.random()))
        if i < 19:
            assert not flat.converged()  # two full windows first
    assert flat.converged() and not falling.converged()
    flat.reset()
    assert not flat.converged()


def test_presets_end_at_their_resolution_and_cost_in_order():
    costs = {}
    for name, config in QUALITY.items():
        steps = plan(config.fit, config.resolution)
        assert steps[-1] == config.resolution and len(steps) == config.fit.iters
        costs[name] = sum(step_cost(r) for r in steps)
    assert costs["draft"] < costs["default"] < costs["high"]
    assert quality_config("default") == QUALITY["default"]
    with pytest.raises(MeshError, match="unknown mesh quality 'best'"):
        quality_config("best")

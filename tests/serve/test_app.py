"""How ServeConfig maps onto Serve's deployment options (no Ray needed)."""
from __future__ import annotations

import pytest

from sv3d_trt.errors import RequestError
from sv3d_trt.serve import ServeConfig
from sv3d_trt.serve.app import generator_options


def test_generator_options():
    fixed = generator_options(ServeConfig(source="ck", replicas=3), gpus=1.0)
    assert fixed["num_replicas"] == 3 and fixed["max_ongoing_requests"] == 1
    assert fixed["ray_actor_options"]["num_gpus"] == 1.0 and "autoscaling_config" not in fixed

    scaled = generator_options(ServeConfig(source="ck", autoscale=(0, 4)), gpus=1.0)
    assert scaled["autoscaling_config"] == {"min_replicas": 0, "max_replicas": 4, "initial_replicas": 1,
                                            "target_ongoing_requests": 1}
    assert "num_replicas" not in scaled

    cfg = generator_options(ServeConfig(source="ck", parallel="cfg"), gpus=1.0)
    assert cfg["placement_group_bundles"] == [{"CPU": 1, "GPU": 1.0}] * 2
    assert cfg["placement_group_strategy"] == "STRICT_PACK"
    assert generator_options(ServeConfig(source="ck", parallel="cfg"), gpus=0)["placement_group_bundles"] == \
        [{"CPU": 1}] * 2


def test_config_errors():
    with pytest.raises(RequestError, match="--parallel must be one of none, cfg"):
        ServeConfig(source="ck", parallel="tensor")
    with pytest.raises(RequestError, match="--replicas must be >= 1"):
        ServeConfig(source="ck", replicas=0)
    with pytest.raises(RequestError, match="unknown backend 'tensorflow'"):
        ServeConfig(source="ck", backend="tensorflow")

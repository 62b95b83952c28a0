"""A two-node Ray cluster on one host: a generator replica on each node, results reaching the
ingress through Ray, and a replica killed in the middle of a job (retried on the other node;
Serve replaces the dead replica)."""
from __future__ import annotations

import time

import pytest

from tests.serve.conftest import require_serve, start_service

LONG = 500


@pytest.fixture(scope="module")
def cluster_client(tiny_checkpoint, tmp_path_factory):
    require_serve()
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from sv3d_trt.serve.cfg_parallel import free_port

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4, "include_dashboard": False})
    cluster.add_node(num_cpus=4)
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        cluster.wait_for_nodes()
        yield start_service(tiny_checkpoint, free_port(), replicas=2, max_replicas_per_node=1, max_queued=4,
                            results_dir=str(tmp_path_factory.mktemp("results")))
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()


def _generator_replicas() -> int:
    from ray import serve

    return serve.status().applications["sv3d"].deployments["Generator"].replica_states.get("RUNNING", 0)


def test_a_replica_on_each_node_results_reach_the_ingress(cluster_client, mug_bytes):
    import ray

    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    jobs = [cluster_client.submit(mug_bytes, steps=LONG).json()["id"] for _ in range(2)]
    running = [cluster_client.wait_for(j, lambda s: s["status"] == "running") for j in jobs]
    assert len({s["node"] for s in running}) == 2, "both replicas should work at once, one per node"
    for job_id in jobs:
        cluster_client.delete(f"/v1/orbits/{job_id}")

    finished = [cluster_client.submit(mug_bytes, steps=2).json()["id"] for _ in range(2)]
    statuses = [cluster_client.wait_done(j) for j in finished]
    assert [s["status"] for s in statuses] == ["done", "done"]
    for status in statuses:
        run = cluster_client.get(status["files"]["run.json"]).json()
        assert run["node"] == status["node"]
        assert len(cluster_client.get(status["files"]["frames.zip"]).content) > 1000


def test_killed_replica_job_is_retried_and_the_replica_replaced(cluster_client, mug_bytes):
    import ray

    job_id = cluster_client.submit(mug_bytes, steps=12).json()["id"]
    first = cluster_client.wait_for(job_id, lambda s: s["status"] == "running" and s["step"] >= 1)
    ray.kill(ray.get_actor(first["replica"], namespace="serve"), no_restart=True)

    final = cluster_client.wait_done(job_id, timeout_s=180)
    assert final["status"] == "done", final  # retried once, on the surviving replica
    assert final["attempts"] == 2 and final["replica"] != first["replica"]
    events = cluster_client.get(f"/v1/orbits/{job_id}/events", timeout=30).text
    assert "event: retry" in events and "died" in events

    deadline = time.monotonic() + 120
    while _generator_replicas() < 2:  # Serve starts a replacement
        assert time.monotonic() < deadline, "the killed generator replica was not replaced"
        time.sleep(1)

"""The HTTP API end to end on 127.0.0.1: one Ray instance and one deployment for the module."""
from __future__ import annotations

import base64
import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from tests.serve.conftest import require_serve, start_service

STEPS = 3
LONG = 500  # steps of a job that is cancelled long before it ends (tiny: ~0.3 s a step)


@pytest.fixture(scope="module")
def metrics_port():
    from sv3d_trt.serve.cfg_parallel import free_port

    return free_port()


@pytest.fixture(scope="module")
def client(tiny_checkpoint, tmp_path_factory, metrics_port):
    require_serve()
    import ray
    from ray import serve

    from sv3d_trt.serve.cfg_parallel import free_port

    ray.init(num_cpus=8, num_gpus=0, include_dashboard=False, log_to_driver=False,
             _metrics_export_port=metrics_port)
    try:
        yield start_service(tiny_checkpoint, free_port(), max_queued=2, mesh_iters=4, mesh_resolution=64,
                            results_dir=str(tmp_path_factory.mktemp("results")))
    finally:
        serve.shutdown()
        ray.shutdown()


def _events(client, job_id: str) -> list[dict]:
    """Read the job's server-sent events until the stream ends (the job finished)."""
    events, kind = [], None
    with client.get(f"/v1/orbits/{job_id}/events", stream=True, timeout=120) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                kind = line[len("event: "):]
            elif line.startswith("data: "):
                event = json.loads(line[len("data: "):])
                assert event["type"] == kind
                events.append(event)
    return events


def test_health_ready_and_openapi(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["replicas"]["Generator"] == 1
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/orbits"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(body)
    assert client.get("/docs").status_code == 200


def test_submit_events_results(client, mug_bytes, tiny_checkpoint, example_image):
    seed = int(np.random.default_rng().integers(0, 2**31))
    submitted = client.submit(mug_bytes, steps=STEPS, seed=seed)
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]

    events = _events(client, job_id)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "queued" and "started" in kinds and kinds[-1] == "done", kinds
    assert [e["step"] for e in events if e["type"] == "step"] == list(range(1, STEPS + 1))
    resumed = client.get(f"/v1/orbits/{job_id}/events", headers={"Last-Event-ID": "2"}).text
    assert [int(line[4:]) for line in resumed.splitlines() if line.startswith("id: ")] == list(range(3, len(events)))

    status = client.status(job_id)
    assert status["status"] == "done" and status["attempts"] == 1
    assert set(status["files"]) == {"frames.zip", "orbit.mp4", "orbit.gif", "cameras.json", "run.json"}
    assert status["timings"]["queue_s"] >= 0 and status["timings"]["execution_s"] > 0

    archive = zipfile.ZipFile(io.BytesIO(client.get(status["files"]["frames.zip"]).content))
    assert sorted(archive.namelist()) == sorted([f"frame_{i:03d}.png" for i in range(21)] + ["cameras.json"])
    cameras = client.get(status["files"]["cameras.json"]).json()
    assert len(cameras["frames"]) == 21
    assert client.get(status["files"]["orbit.gif"]).content[:4] == b"GIF8"
    assert client.get(status["files"]["orbit.mp4"]).content[4:8] == b"ftyp"
    run = client.get(status["files"]["run.json"]).json()
    assert run["settings"]["steps"] == STEPS and run["settings"]["seed"] == seed
    assert run["backend"]["backend"] == "torch-eager" and "denoise" in run["timings_s"]
    page = client.get(status["page"])
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert client.get(f"/v1/orbits/{job_id}/mesh.glb").status_code == 404  # no mesh asked for

    # The served orbit is the pipeline's: the same frames as a direct generate with the seed.
    from sv3d_trt.runtime import Pipeline

    direct = Pipeline.from_checkpoint(tiny_checkpoint).generate(example_image, seed=seed, steps=STEPS)
    served = np.stack([np.asarray(Image.open(io.BytesIO(archive.read(f"frame_{i:03d}.png")))) for i in range(21)])
    assert np.abs(served.astype(int) - direct.frames.astype(int)).max() <= 1


def test_json_base64_wait_with_mesh(client, mug_bytes):
    body = {"image": base64.b64encode(mug_bytes).decode(), "filename": "mug.png", "steps": 2,
            "orbit": "dynamic", "elevation": 5.0, "mesh": True}
    response = client.http.post(client.url + "/v1/orbits?wait=true", json=body, timeout=300)
    assert response.status_code == 200, response.text
    status = response.json()
    assert status["status"] == "done", status.get("reason")
    assert "mesh.glb" in status["files"] and status["settings"]["orbit"] == "dynamic"
    assert client.get(status["files"]["mesh.glb"]).content[:4] == b"glTF"


@pytest.mark.parametrize("fields, image, code, message", [
    ({}, b"not an image", 422, "bad.png is unreadable or not an image"),
    ({"orbit": "[[10, 0], [10, 90]]"}, None, 422, "orbit has the wrong length: expected 21"),
    ({"elevation": "120"}, None, 422, "elevation 120.0 is outside [-90, 90] degrees"),
    ({"orbit": "sideways"}, None, 400, "orbit must be 'static', 'dynamic' or an orbit as JSON"),
    ({"steps": "1"}, None, 400, "steps must be an integer in [2, 1000]"),
    ({"seed": "x"}, None, 400, "seed must be an integer"),
    ({"mesh": "maybe"}, None, 400, "mesh must be true or false"),
    ({"colour": "red"}, None, 400, "unknown field(s) colour"),
])
def test_bad_fields_get_the_cli_message(client, mug_bytes, fields, image, code, message):
    data = {k: v for k, v in fields.items()}
    response = client.http.post(client.url + "/v1/orbits", data=data, timeout=60,
                                files={"image": ("bad.png" if image else "mug.png", image or mug_bytes)})
    assert response.status_code == code, response.text
    assert message in response.json()["error"]


def test_bad_bodies(client):
    clear = io.BytesIO()
    Image.new("RGBA", (64, 64), (255, 0, 0, 0)).save(clear, format="PNG")
    cases = [
        (dict(data={"steps": "2"}), 400, "no image"),
        (dict(files={"image": ("clear.png", clear.getvalue())}), 422, "empty alpha channel"),
        (dict(json={"image": "***", "steps": 2}), 400, "not valid base64"),
        (dict(json=[1, 2]), 400, "must be an object"),
        (dict(data="hello", headers={"content-type": "text/plain"}), 400, "send multipart/form-data"),
    ]
    for kwargs, code, message in cases:
        response = client.http.post(client.url + "/v1/orbits", timeout=60, **kwargs)
        assert response.status_code == code and message in response.json()["error"], response.text
    assert client.get("/v1/orbits/nosuchjob").status_code == 404
    assert client.delete("/v1/orbits/nosuchjob").status_code == 404
    assert "nosuchjob" in client.get("/v1/orbits/nosuchjob/run.json").json()["error"]


def test_cancel_stops_between_steps_and_frees_the_replica(client, mug_bytes):
    job_id = client.submit(mug_bytes, steps=LONG).json()["id"]
    running = client.wait_for(job_id, lambda s: s["status"] == "running" and s["step"] >= 2)
    assert running["steps"] == LONG and running["phase"] == "denoise"
    assert client.get(f"/v1/orbits/{job_id}/run.json").status_code == 409  # not done yet
    cancelled = client.delete(f"/v1/orbits/{job_id}").json()
    assert cancelled["status"] == "cancelled" and cancelled["reason"] == "cancelled by request"

    after = client.submit(mug_bytes, wait=True, steps=2).json()
    assert after["status"] == "done"
    assert after["timings"]["queue_s"] < 5.0  # the replica took it within a step or two
    assert client.status(job_id)["status"] == "cancelled"


def test_queue_full_answers_429(client, mug_bytes):
    running = client.submit(mug_bytes, steps=LONG).json()["id"]
    client.wait_for(running, lambda s: s["status"] == "running")
    queued = [client.submit(mug_bytes, steps=2).json()["id"] for _ in range(2)]
    assert [client.status(j)["queue_position"] for j in queued] == [1, 2]

    refused = client.submit(mug_bytes, steps=2)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert "the queue is full (2 jobs waiting)" in refused.json()["error"]

    assert client.delete(f"/v1/orbits/{queued[0]}").json()["status"] == "cancelled"  # a queued job
    assert client.status(queued[1])["queue_position"] == 1
    client.delete(f"/v1/orbits/{running}")
    assert client.wait_done(queued[1])["status"] == "done"
    assert client.status(queued[0])["status"] == "cancelled"


def test_prometheus_metrics(client, metrics_port, mug_bytes):
    """The service's metrics reach Ray's Prometheus endpoint (exported every few seconds)."""
    import time

    assert client.submit(mug_bytes, wait=True, steps=2).json()["status"] == "done"
    names = {"ray_sv3d_jobs_total", "ray_sv3d_step_seconds", "ray_sv3d_queue_depth", "ray_sv3d_queue_seconds",
             "ray_sv3d_execution_seconds"}
    deadline = time.monotonic() + 60
    while True:
        text = client.http.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        missing = {n for n in names if f"# TYPE {n} " not in text}
        if not missing:
            break
        assert time.monotonic() < deadline, f"never reached the Prometheus endpoint: {sorted(missing)}"
        time.sleep(1)


def test_cfg_parallel_replica_matches_the_single_batch(client, tiny_checkpoint, example_image):
    """A --parallel cfg generator replica (rank 1 an actor in its placement group, gloo) gives
    the latent-exact orbit of the single batch-42 pipeline, here through a Serve handle."""
    from ray import serve

    from sv3d_trt.runtime import Pipeline
    from sv3d_trt.serve import ServeConfig
    from sv3d_trt.serve.app import generator_options
    from sv3d_trt.serve.generator import Generator
    from sv3d_trt.serve.request import parse_request

    config = ServeConfig(source=str(tiny_checkpoint), parallel="cfg", warmup_steps=2)
    app = serve.deployment(Generator, name="Generator").options(**generator_options(config, 0)).bind(config)
    handle = serve.run(app, name="cfg", route_prefix=None)
    try:
        assert handle.info.remote().result(timeout_s=120)["backend"]["parallel"] == "cfg"
        seed = int(np.random.default_rng().integers(0, 2**31))
        request = parse_request({"seed": seed, "steps": 3}, example_image.read_bytes(), "mug.png", "sv3d_p", 21)
        events = list(handle.options(stream=True).run.remote("cfg-job", request))
        assert [e["type"] for e in events] == ["started", "step", "step", "step", "result"]
        direct = Pipeline.from_checkpoint(tiny_checkpoint).generate(example_image, seed=seed, steps=3)
        assert np.abs(events[-1]["frames"].astype(int) - direct.frames.astype(int)).max() <= 1
    finally:
        serve.delete("cfg")

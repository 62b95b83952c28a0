"""Load benchmark of `sv3d-trt serve` over HTTP on 127.0.0.1 (Ray Serve, this machine).

    python bench/serve_load.py --config tiny --clients 4 --duration 60 --steps 4 --replicas 1 --json out.json

Phases, each bounded in count and time:
  1. cold start: ray.init + deploy until every replica is ready (the generator loads and warms up)
  2. load: N clients submit and poll for `--duration` s (a 429 waits for Retry-After, at most 1 s);
     latency split into queue wait and execution (server timings) and end to end (client)
  3. saturation: a burst of max_queued + replicas + 8 submissions at once: the share refused (429)
  4. cancel to free: DELETE a running job, then the time until a waiting job starts on that replica
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests

TERMINAL = ("done", "failed", "cancelled")


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    p = np.percentile(values, [50, 95, 99])
    return {"n": len(values), "p50": round(float(p[0]), 3), "p95": round(float(p[1]), 3),
            "p99": round(float(p[2]), 3)}


class Service:
    def __init__(self, url: str, image: bytes):
        self.url, self.image = url, image
        self.http = requests.Session()

    def submit(self, steps: int):
        return requests.post(self.url + "/v1/orbits", files={"image": ("mug.png", self.image)},
                             data={"steps": str(steps)}, timeout=60)

    def status(self, job_id: str) -> dict:
        return requests.get(f"{self.url}/v1/orbits/{job_id}", timeout=30).json()

    def wait(self, job_id: str, until, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.status(job_id)
            if until(status) or time.monotonic() > deadline:
                return status
            time.sleep(0.05)

    def events(self, job_id: str) -> list[dict]:
        text = requests.get(f"{self.url}/v1/orbits/{job_id}/events", timeout=60).text
        return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


def load_phase(service: Service, clients: int, duration_s: float, steps: int) -> dict:
    records, rejected, lock = [], [0], threading.Lock()
    stop_at = time.monotonic() + duration_s

    def client():
        while time.monotonic() < stop_at:
            t0 = time.monotonic()
            response = service.submit(steps)
            if response.status_code == 429:
                with lock:
                    rejected[0] += 1
                time.sleep(min(1.0, float(response.headers.get("Retry-After", 1))))
                continue
            response.raise_for_status()
            status = service.wait(response.json()["id"], lambda s: s["status"] in TERMINAL, timeout_s=600)
            with lock:
                records.append((status, time.monotonic() - t0))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=duration_s + 900)
    elapsed = time.monotonic() - t0  # until the last job submitted in the window finished
    done = [(s, e2e) for s, e2e in records if s["status"] == "done"]
    return {"clients": clients, "duration_s": duration_s, "elapsed_s": round(elapsed, 2), "steps": steps,
            "completed": len(done),
            "failed": sum(1 for s, _ in records if s["status"] != "done"), "rejected_429": rejected[0],
            "queue_s": percentiles([s["timings"]["queue_s"] for s, _ in done]),
            "execution_s": percentiles([s["timings"]["execution_s"] for s, _ in done]),
            "end_to_end_s": percentiles([e2e for _, e2e in done])}


def saturation_phase(service: Service, burst: int, steps: int) -> dict:
    responses = [None] * burst

    def post(i):
        responses[i] = service.submit(steps)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(burst)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    codes = [r.status_code for r in responses if r is not None]
    accepted = [r.json()["id"] for r in responses if r is not None and r.status_code == 202]
    for job_id in accepted:  # drain before the next phase
        service.wait(job_id, lambda s: s["status"] in TERMINAL, timeout_s=600)
    return {"burst": burst, "accepted": codes.count(202), "rejected_429": codes.count(429),
            "rejection_rate": round(codes.count(429) / max(1, len(codes)), 3)}


def cancel_phase(service: Service, replicas: int, repeats: int = 3) -> dict:
    """Fill every replica with a long job, queue one short job, cancel one long job: the time
    from the DELETE to the short job's start is the cancel-to-free time."""
    times = []
    for _ in range(repeats):
        long_jobs = [service.submit(1000).json()["id"] for _ in range(replicas)]
        for job_id in long_jobs:
            service.wait(job_id, lambda s: s["status"] == "running" and s.get("step", 0) >= 1, timeout_s=300)
        waiting = service.submit(2).json()["id"]
        t_cancel = time.time()
        requests.delete(f"{service.url}/v1/orbits/{long_jobs[0]}", timeout=30)
        service.wait(waiting, lambda s: s["status"] != "queued", timeout_s=300)
        for job_id in long_jobs[1:]:
            requests.delete(f"{service.url}/v1/orbits/{job_id}", timeout=30)
        service.wait(waiting, lambda s: s["status"] in TERMINAL, timeout_s=300)
        started = [e["time"] for e in service.events(waiting) if e["type"] == "started"]
        times.append(started[0] - t_cancel)
    return {"repeats": repeats, "cancel_to_free_s": [round(t, 3) for t in times],
            "median_s": round(statistics.median(times), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="default: a random checkpoint of --config, made in a temporary folder")
    parser.add_argument("--config", default="tiny", choices=["tiny", "full"])
    parser.add_argument("--backend", default=None)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of the load phase")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--max-queued", type=int, default=4)
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--num-cpus", type=int, default=None, help="Ray's logical CPUs (default: this machine's)")
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args()

    import ray
    from ray import serve

    from sv3d_trt.models.checkpoint import make_checkpoint
    from sv3d_trt.preprocess import example_image_path
    from sv3d_trt.serve import ServeConfig
    from sv3d_trt.serve.app import deploy

    with tempfile.TemporaryDirectory(prefix="sv3d-serve-load-") as tmp:
        checkpoint = args.checkpoint or make_checkpoint(Path(tmp) / "ck.safetensors", args.config, "sv3d_p", seed=0)
        config = ServeConfig(source=str(checkpoint), backend=args.backend, replicas=args.replicas, port=args.port,
                             max_queued=args.max_queued, results_dir=str(Path(tmp) / "results"),
                             warmup_steps=args.steps)
        t0 = time.monotonic()
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
        url = deploy(config)
        cold_start_s = time.monotonic() - t0
        try:
            service = Service(url, example_image_path("mug").read_bytes())
            info = requests.get(url + "/readyz", timeout=30).json()
            report = {"cold_start_to_ready_s": round(cold_start_s, 2), "replicas": args.replicas, "ready": info,
                      "config": args.config, "backend": args.backend or "torch-eager"}
            report["load"] = load_phase(service, args.clients, args.duration, args.steps)
            report["orbits_per_min_per_replica"] = round(
                report["load"]["completed"] / (report["load"]["elapsed_s"] / 60.0) / args.replicas, 2)
            report["saturation"] = saturation_phase(service, args.max_queued + args.replicas + 8, args.steps)
            report["cancel"] = cancel_phase(service, args.replicas)
        finally:
            serve.shutdown()
            ray.shutdown()
    text = json.dumps(report, indent=2)
    print(text)
    if args.json_path:
        Path(args.json_path).write_text(text + "\n")


if __name__ == "__main__":
    main()

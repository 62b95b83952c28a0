"""The service's Prometheus metrics, through ray.util.metrics (exported by every Ray node's
metrics agent, next to Serve's own request counters and latencies)."""
from __future__ import annotations

from ray.util import metrics

LATENCY_BUCKETS_S = [0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600]
STEP_BUCKETS_S = [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5]


class IngressMetrics:
    def __init__(self):
        self.queue_depth = metrics.Gauge("sv3d_queue_depth", "jobs accepted and not yet running")
        self.running = metrics.Gauge("sv3d_running_jobs", "jobs on a generator or mesher replica")
        self.jobs = metrics.Counter("sv3d_jobs_total", "finished jobs by final status", tag_keys=("status",))
        self.rejected = metrics.Counter("sv3d_rejected_total", "submissions refused with 429 (queue full)")
        self.retries = metrics.Counter("sv3d_retries_total", "jobs re-queued after their replica died")
        self.queue_s = metrics.Histogram("sv3d_queue_seconds", "submission to start on a replica",
                                         boundaries=LATENCY_BUCKETS_S)
        self.execution_s = metrics.Histogram("sv3d_execution_seconds", "start on a replica to results stored",
                                             boundaries=LATENCY_BUCKETS_S)


class GeneratorMetrics:
    def __init__(self):
        self.step_s = metrics.Histogram("sv3d_step_seconds", "one denoise step", boundaries=STEP_BUCKETS_S)
        self.failures = metrics.Counter("sv3d_generator_failures_total", "generations that raised")

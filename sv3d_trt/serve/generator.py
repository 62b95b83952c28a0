"""The two model deployments: the generator (one GPU per replica, the UNet loop) and the mesher.

A generator replica loads its pipeline and runs one warm-up generation in its constructor, so
Serve reports it ready only when it can serve at full speed. `run` is a streaming method: it
yields a `started` event (once the replica's previous job has ended), one `step` event per denoise step and finally the result arrays
(which travel back through Ray's object store: no shared disk). The pipeline runs in a worker
thread; when the ingress cancels the request, the event loop receives CancelledError, sets a
flag that the step callback turns into JobCancelled, and waits for the thread, so the replica
takes its next request within one step. Errors come back as an `error` event, not an
exception, so the only exception the ingress sees from a replica is its death.
"""
from __future__ import annotations

import asyncio
import logging
import tempfile
import threading
import time
from pathlib import Path

from ..errors import JobCancelled
from .config import ServeConfig
from .request import OrbitRequest, orbit_argument

log = logging.getLogger(__name__)

STALL_S = 300.0  # a running job with no step for this long makes the health check fail


def _here() -> tuple[str, str]:
    """(replica actor name, node id) of the calling replica."""
    import ray
    from ray import serve

    return serve.get_replica_context().replica_id.to_full_id_str(), ray.get_runtime_context().get_node_id()


def _gpu_device(config: ServeConfig) -> str | None:
    import ray

    return "cuda" if ray.get_gpu_ids() else config.device


class Generator:
    def __init__(self, config: ServeConfig):
        from ..runtime import Pipeline
        from .metrics import GeneratorMetrics

        t0 = time.perf_counter()
        self.config = config
        device = _gpu_device(config)
        options = {"dtype": config.dtype} if config.dtype else {}
        self._follower = None  # rank 1's actor with --parallel cfg
        if config.parallel == "cfg":
            self.pipeline, self._follower = self._cfg_parallel_pipeline(device or "cpu", config.dtype or "fp32")
        else:
            self.pipeline = Pipeline.from_artifacts(config.source, backend=config.backend, device=device, **options)
        self.metrics = GeneratorMetrics()
        self._busy = threading.Lock()
        self._last_progress: float | None = None  # monotonic time of the last step of a running job
        if config.warmup_steps:
            self.pipeline.warmup(steps=config.warmup_steps)  # lazy first-call work, before Serve routes here
        self.ready_s = time.perf_counter() - t0
        log.info("generator ready in %.1f s: %s", self.ready_s, self.pipeline.backend.describe())

    def _cfg_parallel_pipeline(self, device: str, dtype: str):
        """Rank 0 here, rank 1 an actor in this replica's placement group (its second bundle)."""
        import ray

        from ..runtime import Pipeline
        from .cfg_parallel import CfgFollower, CfgParallelBackend, free_port

        address = ray.util.get_node_ip_address()
        init_method = f"tcp://{address}:{free_port(address)}"
        follower = ray.remote(CfgFollower).options(num_cpus=1, num_gpus=1 if device.startswith("cuda") else 0).remote()
        follower.run.remote(self.config.source, init_method, device, dtype)
        backend = CfgParallelBackend.from_checkpoint(self.config.source, device=device, dtype=dtype)
        return Pipeline(backend.join(0, init_method)), follower

    def __del__(self):  # Serve's graceful shutdown of the replica
        if getattr(self, "_follower", None) is not None:
            self.pipeline.backend.shutdown()  # rank 1's `follow` returns
        if getattr(self, "pipeline", None) is not None:
            self.pipeline.close()

    def info(self) -> dict:
        """What the ingress needs to check requests, and what runs here."""
        cfg = self.pipeline.config
        return {"variant": cfg.variant, "num_frames": cfg.num_frames, "image_size": cfg.image_size,
                "backend": self.pipeline.backend.describe(), "ready_s": round(self.ready_s, 3)}

    def check_health(self) -> None:
        """Serve calls this periodically; raising marks the replica unhealthy (it is replaced).
        Default checks miss a hung device thread (ray #61263), so watch step progress."""
        if not self._busy.locked():
            self.pipeline.backend.synchronize()  # a wedged device blocks here: the check times out
        last = self._last_progress
        if last is not None and time.monotonic() - last > STALL_S:
            raise RuntimeError(f"no denoise step for {time.monotonic() - last:.0f} s: the device looks hung")

    def _generate(self, request: OrbitRequest, cancelled: threading.Event, emit, here: tuple[str, str]) -> dict:

        def on_step(i: int) -> None:
            nonlocal steps_started
            now = time.perf_counter()
            self.metrics.step_s.observe(now - steps_started)
            steps_started = now
            self._last_progress = time.monotonic()
            emit({"type": "step", "step": i + 1})
            if cancelled.is_set():
                raise JobCancelled("cancelled")

        with self._busy, orbit_argument(request.orbit) as orbit:  # the previous job's last step has ended
            if cancelled.is_set():
                raise JobCancelled("cancelled before it started")
            emit({"type": "started", "replica": here[0], "node": here[1]})
            steps_started = time.perf_counter()
            self._last_progress = time.monotonic()
            try:
                result = self.pipeline.generate(request.image, orbit=orbit, elevation=request.elevation,
                                                seed=request.seed, steps=request.steps, on_step=on_step)
            finally:
                self._last_progress = None
        return {"type": "result", "frames": result.frames, "cameras": result.cameras, "input_rgb": result.input_rgb,
                "timings": {k: round(v, 4) for k, v in result.timings.items()}, "noise_source": result.noise_source,
                "backend": self.pipeline.backend.describe(), "variant": self.pipeline.variant}

    async def run(self, job_id: str, request: OrbitRequest):
        """Stream of events for one generation (see the module docstring)."""
        from ..runtime.batch import failure_message

        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()

        def emit(event: dict) -> None:
            loop.call_soon_threadsafe(events.put_nowait, event)

        here = _here()

        def work() -> None:
            try:
                emit(self._generate(request, cancelled, emit, here))
            except JobCancelled:
                emit({"type": "cancelled"})
            except Exception as e:  # noqa: BLE001 - reported to the ingress as the job's reason
                self.metrics.failures.inc()
                log.exception("job %s failed", job_id)
                emit({"type": "error", "reason": failure_message(e, self.pipeline.backend.name)})

        thread = loop.run_in_executor(None, work)
        try:
            while True:
                event = await events.get()
                yield event
                if event["type"] not in ("started", "step"):
                    return
        finally:  # the ingress cancelled (CancelledError), or the stream ended
            cancelled.set()
            await thread  # at most one step: then this replica is free


class Mesher:
    """Mesh fitting on its own replicas, so it never holds a generator's GPU."""

    def __init__(self, config: ServeConfig):
        import ray

        from ..mesh.pipeline import reconstruct_mesh

        self._reconstruct = reconstruct_mesh
        self.config = config
        self.device = "cuda" if ray.get_gpu_ids() else "cpu"

    def reconstruct(self, frames, cameras) -> dict[str, bytes]:
        """frames (T, H, W, 3) uint8 and cameras.json -> {"mesh.glb": ..., "mesh_contact.png": ...}."""
        with tempfile.TemporaryDirectory(prefix="sv3d-mesh-") as tmp:
            result = self._reconstruct(frames, cameras, Path(tmp) / "mesh.glb", iters=self.config.mesh_iters,
                                       resolution=self.config.mesh_resolution, device=self.device)
            return {Path(p).name: Path(p).read_bytes() for p in result.files}

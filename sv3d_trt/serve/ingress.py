"""The HTTP ingress (FastAPI on Serve, CPU): requests in, checks, the job table, results out.

    POST   /v1/orbits               multipart (image file + fields) or JSON (image in base64)
    GET    /v1/orbits/{id}          status: queued (position) | running (step k of n) | done | failed | cancelled
    GET    /v1/orbits/{id}/events   server-sent progress events
    DELETE /v1/orbits/{id}          cancel: the generator stops between two steps
    GET    /v1/orbits/{id}/{file}   frames.zip, orbit.mp4, orbit.gif, cameras.json, mesh.glb, run.json
    GET    /healthz, /readyz        liveness; readiness = a generator replica is up and warm

Every job is submitted to the generator deployment at once; Serve's router holds it until a
replica is free (max_ongoing_requests=1 per replica), which is what autoscaling measures.
Past `max_queued` jobs waiting, POST answers 429 with Retry-After. One ingress replica owns
the job table (it is in-memory), so the ingress deployment has exactly one replica.
"""

import asyncio
import json
import logging

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.exceptions import RequestCancelledError

from .. import __version__
from ..errors import CameraError, ImageError, RequestError, SV3DError
from ..runtime.batch import versions
from ..viewer import PAGE_NAME
from .config import ServeConfig
from .jobs import CANCELLED, DONE, FAILED, Job, JobTable
from .request import decode_base64_image, parse_request
from .results import ResultsStore

log = logging.getLogger(__name__)

REPLICA_DIED = (RayActorError, ActorUnavailableError)
MAX_DISPATCHES = 6  # sends of one job to the generator (replica deaths and stale routes together)
REDISPATCH_DELAY_S = 0.5
_REQUEST_BODY = {  # OpenAPI for the body read by hand (one endpoint, two content types)
    "required": True,
    "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
            "image": {"type": "string", "format": "binary"},
            "seed": {"type": "integer", "default": 23}, "steps": {"type": "integer", "default": 50},
            "orbit": {"type": "string", "description": "static | dynamic | JSON list of 21 [elevation, azimuth]"},
            "elevation": {"type": "number"}, "mesh": {"type": "boolean", "default": False}}}},
        "application/json": {"schema": {"type": "object", "required": ["image"], "properties": {
            "image": {"type": "string", "description": "the image file, base64"},
            "filename": {"type": "string"}, "seed": {"type": "integer"}, "steps": {"type": "integer"},
            "orbit": {"description": "static | dynamic | list of 21 [elevation, azimuth] pairs"},
            "elevation": {"type": "number"}, "mesh": {"type": "boolean"}}}},
    },
}

app = FastAPI(title="sv3d-trt", version=__version__,
              description="SV3D orbits (21 views around an object) and textured meshes from one image.")


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class _NotFound(SV3DError):
    """An unknown job id (answered 404)."""


@app.exception_handler(SV3DError)
async def _typed_error(request: Request, exc: SV3DError) -> JSONResponse:
    """The project's own message; 404 for an unknown job, 422 for an unusable image or camera
    path, 400 for anything else malformed."""
    if isinstance(exc, _NotFound):
        return _error(404, str(exc))
    return _error(422 if isinstance(exc, (ImageError, CameraError)) else 400, str(exc))


async def _read_body(request: Request) -> tuple[dict, bytes | None, str]:
    """(fields, image bytes, image name) from a multipart form or a JSON body."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):  # the latter: fields, no file
        form = await request.form()
        upload = form.get("image")
        fields = {k: v for k, v in form.items() if k != "image"}
        if upload is None or isinstance(upload, str):
            return fields, None, "image"
        return fields, await upload.read(), upload.filename or "image"
    if kind == "application/json":
        try:
            body = json.loads(await request.body())
        except ValueError as e:
            raise RequestError(f"the body is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise RequestError("the JSON body must be an object with `image` and the fields")
        name = str(body.pop("filename", "image"))
        return body, decode_base64_image(body.pop("image", None)), name
    raise RequestError(f"send multipart/form-data or application/json, not {kind or 'no content type'!r}")


@serve.deployment(num_replicas=1, max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0})
@serve.ingress(app)
class Ingress:
    def __init__(self, config: ServeConfig, generator, mesher):
        from .metrics import IngressMetrics

        self.config = config
        self.generator = generator
        self.mesher = mesher
        self.store = ResultsStore(config.results_dir)
        self.jobs = JobTable(config.retention, config.retention_s, on_forget=lambda job: self.store.delete(job.id))
        self.metrics = IngressMetrics()
        self._info: dict | None = None
        self._info_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()

    async def _model_info(self) -> dict:
        """The generator's variant and frame count (asked once: requests are checked against them)."""
        async with self._info_lock:
            if self._info is None:
                self._info = await self.generator.info.remote()
        return self._info

    def _observe(self) -> None:
        self.metrics.queue_depth.set(len(self.jobs.queued()))
        self.metrics.running.set(len(self.jobs.running()))

    def _job(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise _NotFound(f"no job {job_id!r} (unknown, or past the results retention)")
        return job

    # ---- endpoints ----------------------------------------------------------------------

    @app.post("/v1/orbits", status_code=202, openapi_extra={"requestBody": _REQUEST_BODY})
    async def submit(self, request: Request, wait: bool = False):
        """Queue an orbit; 202 with its id, or (?wait=true) its final status when it ends."""
        if len(self.jobs.queued()) >= self.config.max_queued:
            return self._queue_full()
        info = await self._model_info()
        fields, image, name = await _read_body(request)
        orbit_request = await asyncio.to_thread(parse_request, fields, image, name, info["variant"],
                                                info["num_frames"])
        if len(self.jobs.queued()) >= self.config.max_queued:  # again: requests checked meanwhile may fill it
            return self._queue_full()
        job = self.jobs.add(Job(settings=orbit_request.settings()))  # no await since the check
        task = asyncio.get_running_loop().create_task(self._run(job, orbit_request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._observe()
        if wait:
            await asyncio.shield(task)
            return JSONResponse(self.jobs.status(job), status_code=200)
        return JSONResponse({"id": job.id, "status": job.state, "queue_position": self.jobs.position(job),
                             "url": f"/v1/orbits/{job.id}"}, status_code=202)

    def _queue_full(self) -> JSONResponse:
        self.metrics.rejected.inc()
        retry = self.jobs.retry_after_s(self.config.max_replicas)
        return _error(429, f"the queue is full ({self.config.max_queued} jobs waiting); retry in {retry} s",
                      headers={"Retry-After": str(retry)})

    @app.get("/v1/orbits/{job_id}")
    async def status(self, job_id: str):
        return self.jobs.status(self._job(job_id))

    @app.delete("/v1/orbits/{job_id}")
    async def cancel(self, job_id: str):
        """Cancel a queued or running job; the replica stops between two denoise steps."""
        job = self._job(job_id)
        if not job.finished_state:
            cancel = job.cancel
            self.jobs.finish(job, CANCELLED, reason="cancelled by request")
            if cancel is not None:
                cancel()
            self.metrics.jobs.inc(tags={"status": CANCELLED})
            self._observe()
        return self.jobs.status(job)

    @app.get("/v1/orbits/{job_id}/events")
    async def events(self, job_id: str, request: Request):
        """Server-sent events: queued, started, step (k of n), phase, retry, done | failed | cancelled."""
        job = self._job(job_id)
        after = int(request.headers.get("last-event-id", -1))

        async def stream():
            async for event in self.jobs.events(job, after):
                yield f"id: {event['seq']}\nevent: {event['type']}\ndata: {json.dumps(event)}\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.get("/v1/orbits/{job_id}/")
    async def page(self, job_id: str):
        """The job's viewer page (orbit, cameras, mesh) once it is done."""
        return await self.result(job_id, PAGE_NAME)

    @app.get("/v1/orbits/{job_id}/{name}")
    async def result(self, job_id: str, name: str):
        job = self._job(job_id)
        if job.state != DONE:
            return _error(409, f"job {job_id} is {job.state}; its files appear when it is done")
        path = self.store.path(job_id, name)
        if path is None:
            return _error(404, f"job {job_id} has no file {name!r}; it has {', '.join(job.files)}")
        return FileResponse(path)

    @app.get("/healthz")
    async def healthz(self):
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(self):
        """Ready when a generator replica is running (it warms up before it reports running)."""
        status = await asyncio.to_thread(serve.status)
        deployments = status.applications[self.config.app_name].deployments
        running = {name: d.replica_states.get("RUNNING", 0) for name, d in deployments.items()}
        ready = running.get("Generator", 0) > 0
        return JSONResponse({"ready": ready, "replicas": running}, status_code=200 if ready else 503)

    # ---- one job --------------------------------------------------------------------------

    async def _run(self, job: Job, request) -> None:
        try:
            result = await self._generate(job, request)
            if result is None or job.finished_state:
                return
            extra = {}
            if request.mesh:
                self.jobs.set_phase(job, "mesh")
                response = self.mesher.reconstruct.remote(result["frames"], result["cameras"])
                job.cancel = response.cancel
                extra = await response
            self.jobs.set_phase(job, "store")
            files = await asyncio.to_thread(self.store.write, job.id, result["frames"], result["cameras"],
                                            result["input_rgb"], self._run_info(job, result), extra)
            self.jobs.finish(job, DONE, files=files)
            self.metrics.queue_s.observe(job.timings["queue_s"])
            self.metrics.execution_s.observe(job.timings["execution_s"])
        except (RequestCancelledError, asyncio.CancelledError):
            self.jobs.finish(job, CANCELLED, reason="cancelled by request")
        except Exception as e:  # noqa: BLE001 - the job fails with its reason; the service goes on
            log.exception("job %s failed", job.id)
            self.jobs.finish(job, FAILED, reason=f"{type(e).__name__}: {e}".splitlines()[0][:500])
        finally:
            if job.state != CANCELLED:  # DELETE counts its own
                self.metrics.jobs.inc(tags={"status": job.state})
            self._observe()

    async def _generate(self, job: Job, request) -> dict | None:
        """Stream the generator's events into the job. A replica that dies while running the job
        gets it re-queued once; a request routed to a replica that was already dead (it never
        started) is simply sent again, a few times at most."""
        deaths = 0
        for _ in range(MAX_DISPATCHES):
            started = job.attempts
            stream = self.generator.options(stream=True).run.remote(job.id, request)
            job.cancel = stream.cancel
            try:
                async for event in stream:
                    kind = event["type"]
                    if kind == "started":
                        self.jobs.start(job, event["replica"], event["node"])
                        self._observe()
                    elif kind == "step":
                        self.jobs.progress(job, event["step"])
                    elif kind == "result":
                        return event
                    elif kind == "error":
                        self.jobs.finish(job, FAILED, reason=event["reason"])
                        return None
                    elif kind == "cancelled":
                        self.jobs.finish(job, CANCELLED, reason="cancelled by request")
                        return None
                raise RuntimeError("the generator's event stream ended without a result")
            except REPLICA_DIED as e:
                if job.finished_state:
                    return None
                if job.attempts == started:  # it never ran there: Serve had not dropped the dead replica yet
                    await asyncio.sleep(REDISPATCH_DELAY_S)
                    continue
                deaths += 1
                reason = f"generator replica {job.replica} died ({type(e).__name__})"
                if deaths == 2:
                    self.jobs.finish(job, FAILED, reason=f"{reason}, and again on the retry")
                    return None
                log.warning("job %s: %s; retrying once", job.id, reason)
                self.jobs.requeue(job, reason)
                self.metrics.retries.inc()
                self._observe()
        self.jobs.finish(job, FAILED, reason=f"no live generator replica took the job in {MAX_DISPATCHES} tries")
        return None

    def _run_info(self, job: Job, result: dict) -> dict:
        return {"id": job.id, "settings": job.settings, "variant": result["variant"], "backend": result["backend"],
                "noise_source": result["noise_source"], "replica": job.replica, "node": job.node,
                "attempts": job.attempts, "versions": versions(),
                "timings_s": {**job.timings, **result["timings"]}}

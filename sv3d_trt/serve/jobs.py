"""The ingress's job table: state, queue position, progress events, retention.

Everything here runs on the ingress's event loop (one thread), so there are no locks; SSE
readers wait on a per-job asyncio.Condition. Jobs are FIFO: a job's queue position is its
rank among the jobs submitted before it that have not started yet, which is the order in
which Serve's router hands them to free generator replicas.
"""
from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
TERMINAL = (DONE, FAILED, CANCELLED)


@dataclass(eq=False)
class Job:
    settings: dict
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    state: str = QUEUED
    submitted: float = field(default_factory=time.time)
    started: float | None = None  # when a replica began it (the latest attempt)
    finished: float | None = None
    step: int = 0  # denoise steps done, of settings["steps"]
    phase: str = ""  # denoise | mesh | store, while running
    reason: str = ""  # why it failed or was cancelled
    replica: str = ""  # the Serve replica (actor name) running it, and its node
    node: str = ""
    attempts: int = 0
    files: list[str] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    timings: dict = field(default_factory=dict)  # queue_s, execution_s, per stage seconds
    cancel: Callable[[], None] | None = None  # cancels the in-flight Serve request
    _changed: asyncio.Condition | None = None

    @property
    def finished_state(self) -> bool:
        return self.state in TERMINAL

    def changed(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed


class JobTable:
    def __init__(self, retention: int = 100, retention_s: float = 86400.0,
                 on_forget: Callable[[Job], None] | None = None):
        self.retention = retention
        self.retention_s = retention_s
        self.on_forget = on_forget  # deletes a forgotten job's results
        self._jobs: dict[str, Job] = {}
        self._execution_s: deque[float] = deque(maxlen=20)  # recent run times, for Retry-After

    def __len__(self) -> int:
        return len(self._jobs)

    def add(self, job: Job) -> Job:
        self._jobs[job.id] = job
        self.emit(job, "queued", position=self.position(job))
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def queued(self) -> list[Job]:
        return [j for j in self._jobs.values() if j.state == QUEUED]  # dicts keep submission order

    def running(self) -> list[Job]:
        return [j for j in self._jobs.values() if j.state == RUNNING]

    def position(self, job: Job) -> int | None:
        """1-based place in the queue, None once the job has started."""
        if job.state != QUEUED:
            return None
        return 1 + sorted(self.queued(), key=lambda j: j.submitted).index(job)

    def emit(self, job: Job, kind: str, **data) -> dict:
        """Record one progress event and wake the job's SSE readers."""
        event = {"seq": len(job.events), "type": kind, "time": time.time(), **data}
        job.events.append(event)
        condition = job.changed()

        async def notify():
            async with condition:
                condition.notify_all()

        try:
            asyncio.get_running_loop().create_task(notify())
        except RuntimeError:  # no loop (unit use): nobody can be waiting
            pass
        return event

    def start(self, job: Job, replica: str, node: str) -> None:
        job.state, job.started, job.replica, job.node, job.phase = RUNNING, time.time(), replica, node, "denoise"
        job.attempts += 1
        job.timings["queue_s"] = round(job.started - job.submitted, 4)
        self.emit(job, "started", replica=replica, node=node, attempt=job.attempts)

    def requeue(self, job: Job, reason: str) -> None:
        """The replica died: the job waits for another one (its queue place is its submission time)."""
        job.state, job.step, job.phase = QUEUED, 0, ""
        self.emit(job, "retry", reason=reason, position=self.position(job))

    def progress(self, job: Job, step: int) -> None:
        job.step = step
        self.emit(job, "step", step=step, steps=job.settings["steps"])

    def set_phase(self, job: Job, phase: str) -> None:
        job.phase = phase
        self.emit(job, "phase", phase=phase)

    def finish(self, job: Job, state: str, reason: str = "", files: list[str] | None = None) -> None:
        if job.finished_state:
            return
        job.state, job.reason, job.finished, job.phase, job.cancel = state, reason, time.time(), "", None
        if files is not None:
            job.files = files
        if job.started is not None:
            job.timings["execution_s"] = round(job.finished - job.started, 4)
            if state == DONE:
                self._execution_s.append(job.finished - job.started)
        self.emit(job, state, **({"reason": reason} if reason else {}), **({"files": job.files} if files else {}))
        self.forget_expired()

    def forget_expired(self, now: float | None = None) -> list[Job]:
        """Drop finished jobs beyond the retention count or age, oldest first."""
        now = time.time() if now is None else now
        finished = sorted((j for j in self._jobs.values() if j.finished_state), key=lambda j: j.finished)
        excess = len(finished) - self.retention
        gone = [j for i, j in enumerate(finished) if i < excess or now - j.finished > self.retention_s]
        for job in gone:
            del self._jobs[job.id]
            if self.on_forget is not None:
                self.on_forget(job)
        return gone

    def retry_after_s(self, replicas: int) -> int:
        """Seconds until a queue place is likely free: the queue times the recent mean run time."""
        mean = sum(self._execution_s) / len(self._execution_s) if self._execution_s else 10.0
        return max(1, math.ceil(mean * (len(self.queued()) + 1) / max(1, replicas)))

    def status(self, job: Job) -> dict[str, Any]:
        out: dict[str, Any] = {"id": job.id, "status": job.state, "settings": job.settings,
                               "submitted": job.submitted, "attempts": job.attempts}
        if job.state == QUEUED:
            out["queue_position"] = self.position(job)
        if job.state == RUNNING:
            out.update(step=job.step, steps=job.settings["steps"], phase=job.phase)
        if job.replica:
            out.update(replica=job.replica, node=job.node)
        if job.reason:
            out["reason"] = job.reason
        if job.state == DONE:
            out["files"] = {name: f"/v1/orbits/{job.id}/{name}" for name in job.files}
            out["page"] = f"/v1/orbits/{job.id}/"  # the viewer: orbit, cameras, mesh
        if job.timings:
            out["timings"] = job.timings
        return out

    async def events(self, job: Job, after: int = -1) -> AsyncIterator[dict]:
        """Every event with seq > after, then new ones as they come, until the job finishes."""
        condition = job.changed()
        while True:
            pending = job.events[after + 1:]
            for event in pending:
                after = event["seq"]
                yield event
            if job.finished_state and after == len(job.events) - 1:
                return
            async with condition:
                if len(job.events) == after + 1:
                    await condition.wait()

"""The job table and the request checks, without Ray."""
from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from sv3d_trt.errors import CameraError, ImageError, RequestError
from sv3d_trt.serve.jobs import CANCELLED, DONE, QUEUED, RUNNING, Job, JobTable
from sv3d_trt.serve.request import parse_request


def _job(steps=4) -> Job:
    return Job(settings={"steps": steps})


def test_queue_positions_progress_and_retry():
    table = JobTable()
    a, b, c = (table.add(_job()) for _ in range(3))
    assert [table.position(j) for j in (a, b, c)] == [1, 2, 3]
    table.start(a, "replica-1", "node-1")
    assert table.position(a) is None and [table.position(j) for j in (b, c)] == [1, 2]
    table.progress(a, 2)
    status = table.status(a)
    assert (status["status"], status["step"], status["steps"], status["replica"]) == (RUNNING, 2, 4, "replica-1")
    table.requeue(a, "replica-1 died")  # keeps its submission time: first in line again
    assert a.state == QUEUED and table.position(a) == 1 and table.position(b) == 2
    table.start(a, "replica-2", "node-2")
    assert a.attempts == 2
    table.finish(a, DONE, files=["run.json"])
    table.finish(a, CANCELLED)  # a finished job stays finished
    assert table.status(a)["status"] == DONE and table.status(a)["files"] == {"run.json": f"/v1/orbits/{a.id}/run.json"}
    assert [e["type"] for e in a.events] == ["queued", "started", "step", "retry", "started", "done"]


def test_retention_forgets_the_oldest_and_deletes_their_results():
    forgotten = []
    table = JobTable(retention=2, retention_s=3600, on_forget=lambda j: forgotten.append(j.id))
    jobs = [table.add(_job()) for _ in range(4)]
    for job in jobs:
        table.finish(job, DONE)
    assert forgotten == [jobs[0].id, jobs[1].id] and table.get(jobs[0].id) is None and len(table) == 2
    table.forget_expired(now=jobs[-1].finished + 7200)  # past the age limit
    assert len(table) == 0


def test_retry_after_grows_with_the_queue():
    table = JobTable()
    for _ in range(3):
        table.add(_job())
    assert table.retry_after_s(replicas=1) == 40  # 10 s a job before any finished, 4 places
    assert table.retry_after_s(replicas=4) == 10


def test_events_stream_until_the_job_ends():
    async def scenario():
        table = JobTable()
        job = table.add(_job(steps=2))
        seen = []

        async def read():
            async for event in table.events(job):
                seen.append(event["type"])

        reader = asyncio.get_running_loop().create_task(read())
        await asyncio.sleep(0.01)
        table.start(job, "r", "n")
        for i in (1, 2):
            table.progress(job, i)
            await asyncio.sleep(0.01)
        table.finish(job, DONE)
        await asyncio.wait_for(reader, 5)
        return seen

    assert asyncio.run(scenario()) == ["queued", "started", "step", "step", "done"]


def _png(mode="RGBA", colour=(200, 30, 30, 255), size=64) -> bytes:
    image = Image.new(mode, (size, size), colour[: len(mode)])
    if mode == "RGBA":
        image.paste((0, 0, 0, 0), (0, 0, size, 8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_parse_request_applies_the_cli_checks():
    request = parse_request({"seed": "7", "steps": "3", "orbit": "dynamic", "elevation": "12.5", "mesh": "true"},
                            _png(), "cube.png", "sv3d_p", 21)
    assert (request.seed, request.steps, request.orbit, request.elevation, request.mesh) == (7, 3, "dynamic", 12.5, True)
    assert request.image.mode == "RGBA"
    pairs = [[10.0, 360.0 * i / 21] for i in range(21)]
    assert parse_request({"orbit": pairs}, _png(), "cube.png", "sv3d_p", 21).orbit == pairs

    with pytest.raises(CameraError, match="sv3d_u has no camera input"):
        parse_request({"elevation": 10}, _png(), "cube.png", "sv3d_u", 21)
    with pytest.raises(CameraError, match=r"^orbit: entry 0 is 5"):
        parse_request({"orbit": [5] * 21}, _png(), "cube.png", "sv3d_p", 21)
    with pytest.raises(ImageError, match="tiny.png is 8x8 px"):
        parse_request({}, _png(size=8), "tiny.png", "sv3d_p", 21)
    with pytest.raises(ImageError, match="cube.png is unreadable or not an image .*'cube.png'"):
        parse_request({}, b"GIF89a", "cube.png", "sv3d_p", 21)
    with pytest.raises(RequestError, match=r"steps must be an integer in \[2, 1000\], got True"):
        parse_request({"steps": True}, _png(), "cube.png", "sv3d_p", 21)
    with pytest.raises(RequestError, match="elevation must be a finite number"):
        parse_request({"elevation": "nan"}, _png(), "cube.png", "sv3d_p", 21)

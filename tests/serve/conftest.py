"""Serve test helpers: one Ray instance per test module, loopback HTTP, bounded waits.

Ray Serve is in the `serve` extra, which CI installs (`.[all,test]`); with CI=true a missing
Ray fails these tests instead of skipping them.
"""
from __future__ import annotations

import os
import time

import pytest


def require_serve():
    try:
        import fastapi  # noqa: F401
        import ray  # noqa: F401
        import requests  # noqa: F401
        from ray import serve  # noqa: F401
    except ImportError as e:
        if os.environ.get("CI", "").lower() in ("1", "true"):
            raise AssertionError(f"the serve tests need `pip install -e '.[serve]'` in CI: {e}") from e
        pytest.skip(f"Ray Serve is not installed ({e}); pip install -e '.[serve]'")


@pytest.fixture(scope="session")
def mug_bytes(example_image):
    return example_image.read_bytes()


class Client:
    """requests against the service on 127.0.0.1, every wait bounded."""

    def __init__(self, url: str):
        import requests

        self.url = url
        self.http = requests.Session()

    def get(self, path: str, **kw):
        return self.http.get(self.url + path, timeout=kw.pop("timeout", 60), **kw)

    def delete(self, path: str):
        return self.http.delete(self.url + path, timeout=60)

    def submit(self, image: bytes, wait: bool = False, **fields):
        data = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in fields.items()}
        return self.http.post(self.url + "/v1/orbits" + ("?wait=true" if wait else ""),
                              files={"image": ("mug.png", image)}, data=data, timeout=300)

    def status(self, job_id: str) -> dict:
        return self.get(f"/v1/orbits/{job_id}").json()

    def wait_for(self, job_id: str, predicate, timeout_s: float = 120.0) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.status(job_id)
            if predicate(status):
                return status
            assert time.monotonic() < deadline, f"timed out waiting on {job_id}: {status}"
            time.sleep(0.1)

    def wait_done(self, job_id: str, timeout_s: float = 120.0) -> dict:
        return self.wait_for(job_id, lambda s: s["status"] in ("done", "failed", "cancelled"), timeout_s)


def start_service(checkpoint, port: int, **options) -> Client:
    """Deploy the app on the connected Ray instance; returns a client once every replica is ready."""
    from sv3d_trt.serve import ServeConfig
    from sv3d_trt.serve.app import deploy

    options.setdefault("warmup_steps", 2)
    config = ServeConfig(source=str(checkpoint), host="127.0.0.1", port=port, **options)
    return Client(deploy(config))

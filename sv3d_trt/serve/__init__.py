"""`sv3d-trt serve`: orbits and meshes as an HTTP service on Ray Serve (the `serve` extra).

config.py (ServeConfig) -> app.py (deployments) -> ingress.py (HTTP API, jobs.py table,
results.py store, request.py checks) -> generator.py (Pipeline replicas, mesher),
cfg_parallel.py (the two CFG halves on two ranks). Ray is imported only by the modules that
run inside it, so `ServeConfig` and the request checks import without it.
"""
from .config import ServeConfig, parse_autoscale

__all__ = ["ServeConfig", "parse_autoscale"]

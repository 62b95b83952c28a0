"""Assemble and run the three deployments: ingress (CPU) -> generator (GPU) and mesher.

`build_app` only binds deployments (no Ray calls); `deploy` runs them on the connected Ray
cluster and returns when every replica is ready (the generator after its warm-up);
`serve_forever` is what `sv3d-trt serve` calls.
"""
from __future__ import annotations

import threading

from .config import ServeConfig

HEALTH_CHECK_PERIOD_S = 10.0
HEALTH_CHECK_TIMEOUT_S = 60.0


def generator_options(config: ServeConfig, gpus: float) -> dict:
    """Serve options of the generator: one job at a time per replica, `gpus` GPUs each; with
    --parallel cfg a second bundle for rank 1, packed on the same node."""
    resources = {"num_cpus": 1, "num_gpus": gpus}
    options = {"max_ongoing_requests": 1, "ray_actor_options": resources,
               "health_check_period_s": HEALTH_CHECK_PERIOD_S, "health_check_timeout_s": HEALTH_CHECK_TIMEOUT_S}
    if config.autoscale:
        low, high = config.autoscale
        options["autoscaling_config"] = {"min_replicas": low, "max_replicas": high, "initial_replicas": max(low, 1),
                                         "target_ongoing_requests": 1}
    else:
        options["num_replicas"] = config.replicas
    if config.max_replicas_per_node:
        options["max_replicas_per_node"] = config.max_replicas_per_node
    if config.parallel == "cfg":
        bundle = {"CPU": 1, **({"GPU": gpus} if gpus else {})}
        options["placement_group_bundles"] = [bundle, bundle]
        options["placement_group_strategy"] = "STRICT_PACK"
    return options


def build_app(config: ServeConfig, gpus: float = 0.0):
    """The bound application; `gpus` per generator replica (1 on a GPU cluster, 0 on CPUs)."""
    from ray import serve

    from .generator import Generator, Mesher
    from .ingress import Ingress

    generator = serve.deployment(Generator, name="Generator").options(**generator_options(config, gpus))
    mesher = serve.deployment(Mesher, name="Mesher").options(
        num_replicas=1, max_ongoing_requests=1,
        ray_actor_options={"num_cpus": 1, "num_gpus": config.mesh_gpus})
    return Ingress.bind(config, generator.bind(config), mesher.bind(config))


def check_source(config: ServeConfig) -> str:
    """The backend that will serve config.source, or its typed error now, before Ray starts
    (a replica failing in its constructor would only surface as Serve's retry log)."""
    from ..errors import RequestError
    from ..runtime.artifacts import artifact_kind, choose_backend, require_installed

    name = choose_backend(config.source, config.backend)
    require_installed(name)
    if artifact_kind(config.source) == "checkpoint":
        from ..models.checkpoint import inspect_checkpoint

        inspect_checkpoint(config.source)
    if config.parallel == "cfg" and name != "torch-eager":
        raise RequestError(f"--parallel cfg runs the torch-eager backend only; {config.source} is served by {name}")
    return name


def deploy(config: ServeConfig) -> str:
    """Check the source, start Serve's HTTP proxy on config.host:port and run the app; returns
    its base URL once every replica is ready."""
    import ray
    from ray import serve

    check_source(config)
    if not ray.is_initialized():
        ray.init(log_to_driver=False)  # RAY_ADDRESS joins an existing cluster, else a local one
    gpus = config.gpus_per_replica
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    # One proxy, on the head node: the ingress has one replica, and proxies on other nodes
    # would contend for the same host:port when nodes share a host (tests).
    serve.start(proxy_location="HeadOnly", http_options={"host": config.host, "port": config.port})
    serve.run(build_app(config, gpus), name=config.app_name, route_prefix="/")
    return f"http://{config.host}:{config.port}"


def serve_forever(config: ServeConfig, on_ready=None) -> None:
    """Deploy, call on_ready(url), and serve until SIGINT or SIGTERM (a container's stop); then
    shut Serve down."""
    import signal

    from ray import serve

    url = deploy(config)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if on_ready is not None:
        on_ready(url)
    try:
        stop.wait()
    finally:
        serve.shutdown()

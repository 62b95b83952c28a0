"""What `sv3d-trt serve` deploys: one frozen config, built by the CLI, read by every deployment."""
from __future__ import annotations

from dataclasses import dataclass

from ..contract.backends import canonical_backend
from ..errors import RequestError

PARALLEL_MODES = ("none", "cfg")


@dataclass(frozen=True)
class ServeConfig:
    source: str  # an engine directory, an ONNX export or a checkpoint (Pipeline.from_artifacts)
    backend: str | None = None  # canonical backend name; None: chosen by what `source` holds
    device: str | None = None  # None: cuda when the replica has a GPU, else the backend's default
    dtype: str | None = None  # torch backends only; None: the backend's default
    replicas: int = 1
    autoscale: tuple[int, int] | None = None  # (min, max) generator replicas, instead of `replicas`
    host: str = "127.0.0.1"
    port: int = 8000
    max_queued: int = 16  # queued (not yet running) jobs past which POST answers 429
    parallel: str = "none"  # "cfg": the two guidance halves on two workers (torch backends)
    gpus_per_replica: float | None = None  # None: 1 when CUDA is visible to the driver, else 0
    mesh_gpus: float = 0.0  # GPUs of the mesher replica; 0 fits meshes on the CPU
    mesh_iters: int | None = None  # mesh fit steps (None: the mesh default)
    mesh_resolution: int | None = None
    results_dir: str | None = None  # the ingress's results store (None: a temporary folder)
    retention: int = 100  # finished jobs kept (oldest results are deleted first)
    retention_s: float = 24 * 3600.0  # and none older than this
    warmup_steps: int = 50  # Pipeline.warmup steps before the replica reports ready (0: none)
    max_replicas_per_node: int | None = None  # e.g. 1: one generator replica on each node
    app_name: str = "sv3d"

    def __post_init__(self):
        if self.backend is not None:
            try:
                object.__setattr__(self, "backend", canonical_backend(self.backend))
            except ValueError as e:
                raise RequestError(str(e)) from None
        if self.parallel not in PARALLEL_MODES:
            raise RequestError(f"--parallel must be one of {', '.join(PARALLEL_MODES)}, got {self.parallel!r}")
        if self.parallel == "cfg" and self.backend not in (None, "torch-eager"):
            raise RequestError(f"--parallel cfg runs the torch-eager backend only (got {self.backend}); "
                               "the engine backends would need a half-batch step graph (README, Serving)")
        if self.replicas < 1:
            raise RequestError(f"--replicas must be >= 1, got {self.replicas}")
        if self.autoscale is not None and not 0 <= self.autoscale[0] <= self.autoscale[1] >= 1:
            raise RequestError(f"--autoscale MIN:MAX needs 0 <= MIN <= MAX and MAX >= 1, got {self.autoscale}")
        if self.max_queued < 0 or self.retention < 1:
            raise RequestError("--max-queued must be >= 0 and the retention >= 1")

    @property
    def max_replicas(self) -> int:
        return self.autoscale[1] if self.autoscale else self.replicas


def parse_autoscale(text: str) -> tuple[int, int]:
    """'MIN:MAX' -> (MIN, MAX)."""
    try:
        low, high = (int(v) for v in text.split(":"))
    except ValueError:
        raise RequestError(f"--autoscale expects MIN:MAX (e.g. 1:4), got {text!r}") from None
    return low, high

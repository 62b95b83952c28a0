"""The TensorRT objects of one engine directory: runtime, deserialized engines, one execution
context each. The contexts never run concurrently (one stream), so they share one scratch
allocation the size of the largest. TensorRT-RTX contexts also share one runtime cache, loaded
from and saved beside the engines (`runtime_cache.smXY.bin`): the kernels compiled on this GPU
at the first run are reused by every later process."""
from __future__ import annotations

import logging
from types import ModuleType

from ...contract.graphs import GRAPH_NAMES
from ...contract.manifest import Manifest, arch_name
from ...contract.tensorrt import logger_class
from ...errors import BackendUnavailableError, StaleEngineError
from ...fileio import write_bytes_atomic
from .. import cuda
from .plan import BufferPlan, runtime_cache_name

log = logging.getLogger(__name__)


class Engines:
    """Deserialize every engine of `manifest`, check its IO against `plan`, create the contexts."""

    def __init__(self, trt: ModuleType, manifest: Manifest, plan: BufferPlan, capability: tuple[int, int],
                 backend: str):
        self.trt, self.manifest, self.capability, self.backend = trt, manifest, capability, backend
        self.logger = logger_class(trt)()
        self.runtime = trt.Runtime(self.logger)
        self.engines = {g: self._deserialize(g) for g in GRAPH_NAMES}
        self._check_io(plan)
        scratch = max(int(getattr(e, "device_memory_size_v2", None) or e.device_memory_size)
                      for e in self.engines.values())
        self.scratch = cuda.DeviceBuffer(scratch, "TensorRT scratch")
        self.contexts = {g: self._context(g) for g in GRAPH_NAMES}

    def _errors(self) -> str:
        errors = "; ".join(self.logger.errors[-3:]) or "no reason logged"
        self.logger.errors.clear()
        return errors

    def _deserialize(self, graph: str):
        path = self.manifest.engine_path(graph)
        engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            gpu = arch_name(self.capability)
            raise StaleEngineError(
                f"{self.backend} {self.trt.__version__} cannot load {path} on this {gpu} GPU "
                f"({self._errors()}). Rebuild with: "
                f"{self.manifest.rebuild_command(backend=self.backend, targets=[gpu])}"
            )
        return engine

    def _check_io(self, plan: BufferPlan) -> None:
        """The engines' own IO must be what the manifest (and so the plan) says."""
        problems = []
        for graph, engine in self.engines.items():
            names = {engine.get_tensor_name(i) for i in range(engine.num_io_tensors)}
            for name, spec in plan.tensors[graph].items():
                if name not in names:
                    problems.append(f"{graph} engine has no tensor {name!r}")
                elif tuple(engine.get_tensor_shape(name)) != spec.shape:
                    problems.append(f"{graph}.{name} is {tuple(engine.get_tensor_shape(name))} in the engine, "
                                    f"{spec.shape} in the manifest")
        if problems:
            raise StaleEngineError("; ".join(problems) + f". Rebuild with: {self.manifest.rebuild_command()}")

    def _new_context(self, graph: str):
        strategy = self.trt.ExecutionContextAllocationStrategy.USER_MANAGED
        return self.engines[graph].create_execution_context(strategy)

    def _context(self, graph: str):
        context = self._new_context(graph)
        if context is None:
            raise BackendUnavailableError(f"cannot create a {self.backend} context for {graph}: {self._errors()}")
        if hasattr(context, "set_device_memory"):  # TensorRT >= 10.1, TensorRT-RTX
            context.set_device_memory(self.scratch.ptr, self.scratch.nbytes)
        else:
            context.device_memory = self.scratch.ptr
        return context

    def set_address(self, graph: str, name: str, ptr: int) -> None:
        if not self.contexts[graph].set_tensor_address(name, ptr):
            raise BackendUnavailableError(f"TensorRT refused the address of {graph}.{name}")

    def enqueue(self, graph: str, stream: cuda.Stream) -> None:
        if not self.contexts[graph].execute_async_v3(stream.ptr):
            raise BackendUnavailableError(f"TensorRT could not run {graph}: {self._errors()}")

    def capturable(self, graph: str, stream: cuda.Stream) -> bool:
        """Whether `graph`'s context may be captured into a CUDA graph on `stream`."""
        return getattr(self.contexts[graph], "is_stream_capturable", lambda s: True)(stream.ptr)

    def save_runtime_cache(self) -> None:
        """Persist what was compiled at run time (TensorRT-RTX only; full TensorRT compiles nothing)."""

    def close(self) -> None:
        """Contexts before engines before the runtime, then the shared scratch."""
        self.contexts.clear()
        self.engines.clear()
        self.runtime = None
        self.scratch.free()


class RTXEngines(Engines):
    """TensorRT-RTX: every context's runtime config shares one runtime cache."""

    def __init__(self, *args, **kwargs):
        self._runtime_cache = None
        self._cache_dirty = False
        super().__init__(*args, **kwargs)

    @property
    def runtime_cache_path(self):
        return self.manifest.directory / runtime_cache_name(self.capability)

    def _new_context(self, graph: str):
        engine = self.engines[graph]
        config = engine.create_runtime_config()
        config.set_execution_context_allocation_strategy(self.trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        if self._runtime_cache is None:  # one cache shared by every engine's config
            self._runtime_cache = config.create_runtime_cache()
            self._cache_dirty = True
            path = self.runtime_cache_path
            if path.is_file() and not self._runtime_cache.deserialize(path.read_bytes()):
                log.warning("%s was made by another GPU/driver/TensorRT-RTX; recompiling kernels", path)
        config.set_runtime_cache(self._runtime_cache)
        return engine.create_execution_context(config)

    def save_runtime_cache(self) -> None:
        if not self._cache_dirty:
            return
        try:
            write_bytes_atomic(self.runtime_cache_path, bytes(memoryview(self._runtime_cache.serialize())))
        except OSError as e:  # a read-only engine directory: run on, compile again next time
            log.warning("cannot save the TensorRT-RTX runtime cache to %s (%s)", self.runtime_cache_path, e)
        self._cache_dirty = False

    def close(self) -> None:
        self.save_runtime_cache()
        super().close()
        self._runtime_cache = None

"""The CFG step captured once as a CUDA graph and replayed for every step (CUDA only).

Static buffers hold everything the step reads (latent, sigma pair, per-generation state) and
the output; `run` copies its inputs into them with device-to-device copies and replays, so a
whole 50-step loop launches 50 graphs and never waits on the host. One capture serves every
generation: a new state is copied into the static state buffers when it is first used.
"""
from __future__ import annotations

import torch

from .step import CFGEulerStep, FastState

WARMUP_CALLS = 3  # eager calls on a side stream before capture (cuBLAS/cuDNN/Triton autotune and workspaces)


class GraphedStep:
    def __init__(self, step: CFGEulerStep, state: FastState, x: torch.Tensor):
        self.step = step
        self._x = x.detach().clone()  # (T, 4, h, w) fp32
        self._sigma = torch.ones((), dtype=torch.float32, device=x.device)
        self._sigma_next = torch.full((), 0.5, dtype=torch.float32, device=x.device)
        self._state = tuple(t.detach().clone() for t in state.tensors())
        self._loaded: FastState | None = state
        self._graph = torch.cuda.CUDAGraph()
        inputs = (self._x, self._sigma, self._sigma_next, *self._state)
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(WARMUP_CALLS):
                step(*inputs)
        torch.cuda.current_stream(x.device).wait_stream(side)
        with torch.inference_mode(), torch.cuda.graph(self._graph):
            self._out = step(*inputs)  # (T, 4, h, w) fp32, static

    def load(self, state: FastState) -> None:
        if self._loaded is not state:
            for static, new in zip(self._state, state.tensors()):
                static.copy_(new)
            self._loaded = state

    def run(self, state: FastState, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        """One step; returns the static output buffer (valid until the next `run`)."""
        self.load(state)
        self._x.copy_(x)  # also when x is the previous step's output buffer
        self._sigma.copy_(sigma)
        self._sigma_next.copy_(sigma_next)
        self._graph.replay()
        return self._out

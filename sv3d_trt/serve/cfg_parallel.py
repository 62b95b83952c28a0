"""CFG-parallel denoising: the two guidance halves of the batch-2T UNet step on two ranks.

torch-eager runs the UNet once per step on 2T rows: [0, T) unconditional, [T, 2T) conditional
(21 + 21 frames). The halves are independent videos (the temporal layers mix frames within a
video only), so rank 0 evaluates the uncond rows and rank 1 the cond rows, and one all-gather
of the half-batch UNet outputs per step gives both ranks the full output. Both then apply the
same fp32 preconditioning, guidance and Euler update, so their latents stay bit-identical and
no latent is sent; the result equals the single batch-2T step (tests/serve/test_cfg_parallel.py).

Rank 0 is the pipeline's backend; rank 1 runs `follow()`. Per generation rank 0 broadcasts the
prepare inputs, x0 and the sigmas (one pickled message); per step a 3-number control
tensor (go / stop, sigma, sigma_next), so a cancel or an error on rank 0 stops rank 1 between
steps. gloo on CPU, NCCL on CUDA.
"""
from __future__ import annotations

import datetime
import socket

import numpy as np
import torch
import torch.distributed as dist

from ..runtime.backend import Conditioning
from ..runtime.torch_eager import StepState, TorchEagerBackend
from ..sampler import denoised_from_output, guided_euler_step, precondition

WORLD_SIZE = 2
GO, STOP = 1.0, 0.0


class CfgParallelBackend(TorchEagerBackend):
    """torch-eager with each step's UNet batch split across two ranks (see the module docstring)."""

    name = "torch-eager"  # the same backend and numbers; `describe` names the parallelism
    rank: int | None = None

    def join(self, rank: int, init_method: str, timeout_s: float = 600.0) -> "CfgParallelBackend":
        """Join the two-rank process group (blocks until the other rank joins)."""
        dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo", init_method=init_method,
                                rank=rank, world_size=WORLD_SIZE, timeout=datetime.timedelta(seconds=timeout_s))
        self.rank = rank
        return self

    def describe(self) -> dict:
        return {**super().describe(), "parallel": "cfg", "world_size": WORLD_SIZE,
                "process_group": dist.get_backend() if dist.is_initialized() else None}

    # ---- rank 0 -------------------------------------------------------------------------

    def prepare(self, cond: Conditioning, vector: np.ndarray, cfg_scales: np.ndarray) -> StepState:
        self._inputs = (cond.clip_embedding, cond.concat_latent, vector, cfg_scales)  # for rank 1
        return super().prepare(cond, vector, cfg_scales)

    def denoise(self, state, x0, sigmas, on_step=None) -> np.ndarray:
        dist.broadcast_object_list([(self._inputs, x0, sigmas)], src=0)
        try:
            return super().denoise(state, x0, sigmas, on_step=on_step)
        finally:  # also after a cancel or an error: rank 1 waits for the next generation
            self._control(STOP)

    @torch.inference_mode()
    def step(self, state: StepState, x: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
        self._control(GO, sigma, sigma_next)
        return self._parallel_step(state, x, sigma, sigma_next)

    def shutdown(self) -> None:
        """Release rank 1 (its `follow` returns) and leave the process group."""
        dist.broadcast_object_list([None], src=0)
        dist.destroy_process_group()

    # ---- both ranks ---------------------------------------------------------------------

    def _control(self, flag: float, sigma: float = 0.0, sigma_next: float = 0.0) -> tuple[float, float, float]:
        message = torch.tensor([flag, sigma, sigma_next], dtype=torch.float64, device=self._comm_device)
        dist.broadcast(message, src=0)
        flag, sigma, sigma_next = message.tolist()
        return flag, sigma, sigma_next

    @property
    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def _parallel_step(self, state: StepState, x: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
        """torch-eager's step with this rank's half of the UNet batch and an all-gather (same fp32 math)."""
        T = self.config.num_frames
        rows = slice(self.rank * T, (self.rank + 1) * T)
        sigma_t = torch.tensor(sigma, dtype=torch.float32, device=self.device)
        _, _, c_in, c_noise = precondition(sigma_t)
        unet_in = torch.cat([(x * c_in).to(self.weight_dtype), state.concat[rows]], dim=1)  # (T, 8, h, w)
        t = c_noise.expand(T).to(self.weight_dtype)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.autocast):
            half = self.models.unet(unet_in, t, state.context[rows], state.vector[rows]).contiguous()  # (T, 4, h, w)
        halves = [torch.empty_like(half) for _ in range(WORLD_SIZE)]
        dist.all_gather(halves, half)
        out = torch.cat(halves).float()  # (2T, 4, h, w): rows as in the single batch
        d_uncond, d_cond = denoised_from_output(torch.cat([x, x]), out, sigma_t).chunk(2)
        return guided_euler_step(x, d_uncond, d_cond, sigma, sigma_next, state.cfg_scales)

    # ---- rank 1 -------------------------------------------------------------------------

    @torch.inference_mode()
    def follow(self) -> None:
        """Rank 1: run the cond half of every generation rank 0 starts, until `shutdown`."""
        while True:
            message = [None]
            dist.broadcast_object_list(message, src=0)
            if message[0] is None:
                dist.destroy_process_group()
                return
            (clip, latent, vector, scales), x0, sigmas = message[0]
            state = super().prepare(Conditioning(clip, latent, input_rgb=None), vector, scales)
            x = self.to_native(x0)
            while True:
                flag, sigma, sigma_next = self._control(STOP)
                if flag == STOP:
                    break
                x = self._parallel_step(state, x, sigma, sigma_next)


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port free on `address` now, for the process group's rendezvous."""
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def run_follower(checkpoint, init_method: str, device: str = "cpu", dtype: str = "fp32") -> None:
    """Rank 1's whole life in its own process: load the checkpoint, join, follow rank 0."""
    CfgParallelBackend.from_checkpoint(checkpoint, device=device, dtype=dtype).join(1, init_method).follow()


class CfgFollower:
    """Rank 1 as a Ray actor, started by the generator replica inside its placement group."""

    def run(self, checkpoint, init_method: str, device: str, dtype: str) -> None:
        run_follower(checkpoint, init_method, device=device, dtype=dtype)

"""Channels-last convolutions: one NHWC activation layout through the whole UNet.

cuDNN runs NHWC natively (tensor cores); fed NCHW it converts around each conv (≈ 7 ms of the
compiled step, performance.md). In NHWC the token view (B*T, H*W, C) of an activation and the
temporal ResBlock's (B, C, T, H, W) view are the same memory as the (B*T, C, H, W) image, so
the transformer entry/exit and the video blocks' regroupings become free views. Conv weights
of a weight-sharing copy get new channels-last Parameters (the reference keeps its own).
"""
from __future__ import annotations

import torch
from torch import nn


def _relayout(conv: nn.Module, memory_format: torch.memory_format) -> None:
    conv.weight = nn.Parameter(conv.weight.detach().contiguous(memory_format=memory_format), requires_grad=False)


def channels_last(unet: nn.Module) -> None:
    """In place on a weight-sharing copy: Conv2d weights NHWC, Conv3d weights NDHWC. The
    caller feeds channels-last input (`RuntimeUNet` does)."""
    for module in unet.modules():
        if type(module) is nn.Conv2d:
            _relayout(module, torch.channels_last)
        elif type(module) is nn.Conv3d:
            _relayout(module, torch.channels_last_3d)

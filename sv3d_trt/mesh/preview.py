"""Contact sheet: input frames on the top row, the re-rendered mesh below, one column per view."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def contact_sheet(inputs: torch.Tensor, renders: torch.Tensor, thumb: int = 96) -> np.ndarray:
    """inputs, renders (N, H, W, 3) in [0, 1] -> (2 thumb, N thumb, 3) uint8."""
    rows = []
    for stack in (inputs, renders):
        small = F.interpolate(stack.permute(0, 3, 1, 2).float(), size=(thumb, thumb), mode="bilinear",
                              antialias=True, align_corners=False)  # (N, 3, t, t)
        rows.append(small.permute(2, 0, 3, 1).reshape(thumb, -1, 3))  # (t, N t, 3)
    return (torch.cat(rows, 0).clamp(0, 1) * 255).round().byte().cpu().numpy()

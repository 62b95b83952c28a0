"""Input frames for the mesh stage: loading, foreground masks, per-frame colour normalisation.

SV3D renders objects on a white background, so the mask is the alpha channel when the frames have
one, otherwise a key on "distance from white": the authors' code calls a pixel object when any
channel is <= 0.97 (mesh.md), and border pixels get their antialiasing coverage back (`key_white`),
so silhouettes are sub-pixel accurate instead of a one-pixel staircase.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import ImageError

KEY_THRESHOLD = 0.03  # 1 - 0.97: object when min(r, g, b) <= 0.97
KEY_FLOOR = 0.005  # below this distance from white a pixel is background (8-bit noise)


@dataclass(frozen=True, eq=False)
class Frames:
    rgb: torch.Tensor  # (N, H, W, 3) float32 in [0, 1], composited over white
    mask: torch.Tensor  # (N, H, W) float32 soft foreground in [0, 1]

    @property
    def resolution(self) -> int:
        return self.rgb.shape[1]

    def resized(self, resolution: int) -> "Frames":
        """Area-filtered resize (antialiased), the way a camera at that resolution would see it."""
        if resolution == self.resolution:
            return self
        both = torch.cat([self.rgb, self.mask[..., None]], dim=-1).permute(0, 3, 1, 2)  # (N, 4, H, W)
        both = F.interpolate(both, size=(resolution, resolution), mode="bilinear", antialias=True,
                             align_corners=False).clamp(0.0, 1.0)
        both = both.permute(0, 2, 3, 1).contiguous()
        return Frames(both[..., :3].contiguous(), both[..., 3].contiguous())

    def to(self, device) -> "Frames":
        return Frames(self.rgb.to(device), self.mask.to(device))


def read_frames(folder: str | Path, num_frames: int) -> np.ndarray:
    """frame_000.png ... frame_{T-1}.png from `folder` -> (T, H, W, 3 or 4) float32 in [0, 1]."""
    folder = Path(folder)
    paths = [folder / f"frame_{i:03d}.png" for i in range(num_frames)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise ImageError(f"{folder}: missing {len(missing)} of {num_frames} frames (first: {missing[0]})")
    images = []
    for p in paths:
        try:
            with Image.open(p) as im:
                im = im.convert("RGBA" if im.mode in ("RGBA", "LA", "P") else "RGB")
                images.append(np.asarray(im, dtype=np.float32) / 255.0)
        except OSError as e:
            raise ImageError(f"{p} is unreadable: {e}") from None
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise ImageError(f"{folder}: frames differ in size or channels: {sorted(shapes)}")
    return np.stack(images)


def key_white(rgb: torch.Tensor) -> torch.Tensor:
    """Soft foreground (coverage) from a white background: (N, H, W, 3) -> (N, H, W).

    A pixel is object when its distance from white d = 1 - min(r, g, b) exceeds KEY_THRESHOLD.
    An antialiased edge pixel over white is alpha c + (1 - alpha), so its d is alpha times the d
    of the object colour beside it: on the object's border, alpha = d / (largest d within 2 px).
    Inside the object (all 8 neighbours are object too) alpha is 1 whatever the colour.
    """
    distance = 1.0 - rgb.min(dim=-1).values  # (N, H, W)
    solid = (distance > KEY_THRESHOLD).float()
    interior = -F.max_pool2d(-solid[:, None], 3, stride=1, padding=1)[:, 0] > 0.5  # every neighbour solid
    nearby = F.max_pool2d(distance[:, None], 5, stride=1, padding=2)[:, 0]
    coverage = (distance / nearby.clamp_min(KEY_THRESHOLD)).clamp(0.0, 1.0)
    coverage = torch.where(distance > KEY_FLOOR, coverage, torch.zeros_like(coverage))
    return torch.where(interior, torch.ones_like(coverage), coverage)


def normalise_colours(rgb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-frame white balance: scale each channel so the frame's background reads white again.

    The background is known to be white, so its median colour is a per-frame exposure and tint
    reference (video diffusion drifts a little from frame to frame); gains are bounded to +-25 %.
    """
    out = []
    for image, m in zip(rgb, mask):
        background = image[m <= 0.0]  # (P, 3)
        if len(background) < 64:
            out.append(image)
            continue
        gain = (1.0 / background.median(dim=0).values.clamp_min(1e-3)).clamp(0.8, 1.25)  # (3,)
        out.append((image * gain).clamp(0.0, 1.0))
    return torch.stack(out)


def prepare_frames(source, num_frames: int) -> Frames:
    """Frames from a folder of PNGs or an array (T, H, W, 3|4), uint8 or float in [0, 1]."""
    images = read_frames(source, num_frames) if isinstance(source, (str, Path)) else source
    images = torch.as_tensor(np.asarray(images))
    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    images = images.float()
    if images.ndim != 4 or images.shape[-1] not in (3, 4) or images.shape[0] != num_frames:
        raise ImageError(f"expected {num_frames} frames of shape (H, W, 3|4), got {tuple(images.shape)}")
    if images.shape[1] != images.shape[2]:
        raise ImageError(f"frames must be square, got {images.shape[2]}x{images.shape[1]}")
    if images.shape[-1] == 4:
        alpha = images[..., 3]
        rgb = images[..., :3] * alpha[..., None] + (1.0 - alpha[..., None])  # over white
        mask = alpha
    else:
        rgb = images
        mask = key_white(rgb)
    if (mask > 0.5).sum() == 0:
        raise ImageError("no foreground found in any frame (all white, or an empty alpha channel)")
    rgb = normalise_colours(rgb, mask)
    return Frames(rgb.contiguous(), mask.contiguous())

"""Write one generation to disk: per-frame PNGs, an mp4 and a looping gif of the orbit,
cameras.json and the preprocessed input. Every file is written atomically (sv3d_trt.fileio),
so an interrupted run never leaves a half-written video or JSON behind."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
from PIL import Image

from .fileio import atomic_path, write_json_atomic
from .viewer import write_page


def frame_filename(index: int) -> str:
    return f"frame_{index:03d}.png"


def _save_png(path: Path, rgb: np.ndarray) -> Path:
    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")
    return path


def _even(frames: np.ndarray) -> np.ndarray:
    """Pad odd heights/widths by repeating the last row/column: yuv420p needs even sizes."""
    _, h, w, _ = frames.shape
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _save_mp4(path: Path, frames: np.ndarray, fps: float) -> Path:
    import imageio_ffmpeg  # imported here: only this writer needs ffmpeg

    frames = _even(frames)  # (T, H, W, 3), H and W even
    with atomic_path(path) as tmp:
        # The temp name does not end in .mp4, so name the container for ffmpeg explicitly.
        writer = imageio_ffmpeg.write_frames(str(tmp), (frames.shape[2], frames.shape[1]), fps=fps,
                                             codec="libx264", pix_fmt_out="yuv420p", macro_block_size=1,
                                             output_params=["-f", "mp4"])
        writer.send(None)  # start the ffmpeg process
        try:
            for frame in frames:
                writer.send(np.ascontiguousarray(frame))
        finally:
            writer.close()
    return path


def _save_gif(path: Path, frames: np.ndarray, fps: float) -> Path:
    images = [Image.fromarray(f) for f in frames]
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                       duration=int(round(1000.0 / fps)), loop=0)  # loop=0: repeat forever
    return path


def save_outputs(out_dir, frames_uint8: np.ndarray, cameras: dict, input_rgb: np.ndarray | None = None,
                 fps: float = 10) -> dict:
    """Write frame_000.png..frame_NNN.png, orbit.mp4, orbit.gif, cameras.json, input.png and index.html.

    frames_uint8: (T, H, W, 3) uint8. cameras: from cameras.cameras_json; each of its frames
    gains a "file" entry naming its PNG. fps 10 matches the reference's imageio default.
    Returns {"frames": [paths], "mp4", "gif", "cameras", "input" (when input_rgb is given), "page"}.
    """
    frames = np.asarray(frames_uint8)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if len(cameras.get("frames", [])) != len(frames):
        raise ValueError(f"cameras describe {len(cameras.get('frames', []))} frames, got {len(frames)} images")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    paths = {"frames": [_save_png(out_dir / frame_filename(i), f) for i, f in enumerate(frames)]}
    paths["mp4"] = _save_mp4(out_dir / "orbit.mp4", frames, fps)
    paths["gif"] = _save_gif(out_dir / "orbit.gif", frames, fps)
    cameras = copy.deepcopy(cameras)
    for i, entry in enumerate(cameras["frames"]):
        entry["file"] = frame_filename(i)
    write_json_atomic(out_dir / "cameras.json", cameras)
    paths["cameras"] = out_dir / "cameras.json"
    if input_rgb is not None:
        paths["input"] = _save_png(out_dir / "input.png", np.asarray(input_rgb, dtype=np.uint8))
    paths["page"] = write_page(out_dir)  # index.html: the viewer (sv3d_trt/viewer)
    return paths

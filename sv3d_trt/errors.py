"""Typed errors. The library raises these; the CLI prints one line and exits non-zero."""


class SV3DError(Exception):
    """Base class of every error this package raises on purpose."""


class CheckpointError(SV3DError):
    """The checkpoint file is unreadable, truncated, of another model, or mis-shaped."""


class ImageError(SV3DError):
    """The input image cannot be used (unreadable, no separable foreground, wrong size)."""


class CameraError(SV3DError):
    """Bad orbit / camera-path input (wrong length, out of range, given to sv3d_u)."""


class OutputError(SV3DError):
    """The output folder cannot be used: a file, read-only, another run writing it, someone else's files."""


class StaleEngineError(SV3DError):
    """Engines or ONNX graphs do not match this GPU, TensorRT version, variant or shapes."""


class BackendUnavailableError(SV3DError):
    """The requested backend cannot run here (missing package, no GPU, nothing built)."""


class NumericsError(SV3DError):
    """A non-finite value appeared (e.g. fp16 overflow in the denoise loop)."""


class MeshError(SV3DError):
    """A mesh file cannot be used (unreadable, not watertight) or a mesh step failed (UV unwrap)."""


class RequestError(SV3DError):
    """A request to `sv3d-trt serve` (or its options) is malformed: a missing image, a bad field."""


class JobCancelled(SV3DError):
    """A served generation was cancelled; raised from its step callback between denoise steps."""


class ViewerError(SV3DError):
    """An output folder cannot be shown: nothing viewable in it, or an unreadable cameras.json / run.json."""

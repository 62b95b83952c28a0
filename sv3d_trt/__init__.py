"""sv3d-trt: an optimized inference runtime for Stability AI's SV3D.

Importing the package is cheap and torch-free; heavy pieces load on first use.
"""
__version__ = "0.1.0"


def __getattr__(name):
    if name in ("Pipeline", "Result"):
        from . import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module 'sv3d_trt' has no attribute {name!r}")

"""sv3d-trt: an optimized inference runtime for Stability AI's SV3D.

Importing the package is cheap and torch-free; heavy pieces load on first use.
"""
__version__ = "0.1.0"

"""Speed-ups for the PyTorch path, applied to the reference models from outside.

`FastOptions` switches each transform; `RuntimeUNet` applies them to a VideoUNet;
`CFGEulerStep` is the whole guided step on device tensors; `GraphedStep` replays it as a CUDA
graph. The `torch-fast` backend (runtime/torch_fast.py) puts them together.
"""
from .options import COMPILE_MODES, FastOptions
from .runtime_unet import RuntimeUNet
from .step import CFGEulerStep, FastState

__all__ = ["COMPILE_MODES", "CFGEulerStep", "FastOptions", "FastState", "RuntimeUNet"]

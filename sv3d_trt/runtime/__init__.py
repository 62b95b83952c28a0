"""The runtime: one `Pipeline` over interchangeable backends. Importing it is torch-free;
PyTorch loads only when a torch backend is chosen."""
from .backend import Backend, Conditioning, backend_class
from .pipeline import Pipeline, Result

__all__ = ["Backend", "Conditioning", "Pipeline", "Result", "backend_class"]

"""Mesh stage: 21 orbit frames + cameras -> textured mesh (`reconstruct_mesh`), and its evaluation harness."""
from .evaluate import evaluate
from .mesh_io import MeshError
from .optimize import FitConfig
from .pipeline import QUALITY, MeshConfig, MeshResult, quality_config, reconstruct_mesh
from .shapes import SHAPES, procedural_shape

__all__ = ["FitConfig", "MeshConfig", "MeshError", "MeshResult", "QUALITY", "SHAPES", "evaluate", "procedural_shape",
           "quality_config", "reconstruct_mesh"]

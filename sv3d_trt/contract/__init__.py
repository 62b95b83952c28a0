"""The contract between export and runtime, torch-free: what both sides must agree on.

    backends.py     the backend names, aliases, and what each runs / needs / installs with
    graphs.py       the five graph names, one TensorSpec, each graph's IO (GraphIO)
    manifest.py     manifest.json (engines) and export.json (ONNX export): writers, readers, checks
    calibration.py  the int8/fp8 calibration set's file format
    tensorrt.py     the TensorRT / TensorRT-RTX import seam

export/ (which makes artifacts) and runtime/ (which runs them) both import this package and
never each other (tests/contract/test_imports.py checks it).
"""

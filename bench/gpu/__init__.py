"""The GPU bring-up check: every CUDA path of the project in one command (`check.py`).

Run as a script (`python3 bench/gpu/check.py --help`); the modules import as `bench.gpu.*`
from the repository root, so nothing has to be installed on the GPU machine.
"""

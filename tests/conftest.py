"""Under pytest-xdist (`-n auto` in pyproject.toml), one torch thread per worker: the workers already
use every core, and the small networks of these tests gain nothing from intra-op threads, so more
threads per worker would only contend. Subprocesses the tests start inherit OMP_NUM_THREADS."""
import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

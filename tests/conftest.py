"""Under pytest-xdist (`-n auto` in pyproject.toml), one torch thread per worker: the workers already
use every core, and the small networks of these tests gain nothing from intra-op threads, so more
threads per worker would only contend. Subprocesses the tests start inherit OMP_NUM_THREADS.

A test that leaves its worker with more threads fails, and the count is put back: a worker left at two
threads (by code a test ran in-process) spun OpenMP's threads against the other worker and slowed
every later test of both by two to three times, and changed the float sums of the tests after it."""
import os

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

    @pytest.fixture(autouse=True)
    def _one_thread_after_each_test():
        yield
        if torch.get_num_threads() != 1:
            left = torch.get_num_threads()
            torch.set_num_threads(1)
            pytest.fail(f"the test left torch at {left} threads (the worker's is 1): set it back where it changes")

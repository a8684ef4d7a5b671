"""Seeds and the RNG state a checkpoint must carry so that a resumed run draws the same numbers."""
from __future__ import annotations

import random

import numpy as np
import torch

# ALE's C++ reset takes seeds in [0, 2**31 - 1]; env i of a vector env gets seed + i. Derived seeds
# (evaluation envs, resets after --resume, other ranks) wrap below this bound with room for 65,536 envs.
MAX_SEED = 2**31 - 1
_SEED_WRAP = 2**31 - 2**16

# Offsets of the derived seeds, primes so that no two streams of one run or of neighbouring seeds meet.
EVAL_SEED_OFFSET = 1_000_003
"""Evaluation envs and the evaluation policy's own draws (epsilon): the same episodes every time."""
RANK_SEED_OFFSET = 10_007
"""Times the torchrun rank: each rank's envs and numpy draws."""
RANK_SHUFFLE_SEED_OFFSET = 20_011
"""Times the torchrun rank: each rank's minibatch shuffling."""


def derived_seed(seed: int, offset: int) -> int:
    """`seed + offset` folded into the range every component accepts (env i then adds i)."""
    return (seed + offset) % _SEED_WRAP


def seed_everything(seed: int, deterministic: bool = False) -> np.random.Generator:
    """Seed python, numpy's legacy global RNG and torch; return a fresh numpy Generator for our own draws."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return np.random.default_rng(seed)


def rng_state(rng: np.random.Generator | None = None) -> dict:
    """Everything random, in types that `torch.load(weights_only=True)` accepts."""
    state = {
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if rng is not None:
        state["numpy"] = rng.bit_generator.state
    return state


def set_rng_state(state: dict, rng: np.random.Generator | None = None) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if rng is not None and "numpy" in state:
        rng.bit_generator.state = state["numpy"]

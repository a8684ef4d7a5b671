"""Seeds and the RNG state a checkpoint must carry so that a resumed run draws the same numbers."""
from __future__ import annotations

import random

import numpy as np
import torch


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

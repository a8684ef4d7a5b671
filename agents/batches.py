"""--grad-accum: a training batch in equal micro-batches, whose gradients a trainer sums before its
step. Over a loss that is a sum over samples (DQN) or that each slice divides by the whole batch's
count (PPO, Rainbow's mean over K slices of 1/K each), the summed gradient is the whole batch's, to
float rounding; only one slice's activations are in memory at a time."""
from __future__ import annotations

import numpy as np
import torch


def micro_batches(batch: dict, k: int) -> list[dict]:
    """`batch` (tensors or arrays sharing their first dimension) as `k` consecutive equal slices; the
    batch itself when k is 1."""
    if k == 1:
        return [batch]
    parts: list[dict] = [{} for _ in range(k)]
    for key, value in batch.items():
        pieces = value.chunk(k) if torch.is_tensor(value) else np.array_split(value, k)
        if len(pieces) != k or len({len(p) for p in pieces}) != 1:
            raise ValueError(f"{key}: {len(value)} samples do not split into {k} equal micro-batches")
        for part, piece in zip(parts, pieces):
            part[key] = piece
    return parts

"""Small helpers the optimizers share: the foreach default and device/dtype grouping for fused lists."""
from __future__ import annotations

from collections.abc import Sequence

import torch


def use_foreach(foreach: bool | None, params: Sequence[torch.Tensor]) -> bool:
    """torch.optim's default rule: fused tensor lists on accelerators, the per-tensor loop on CPU.

    On CPU the `torch._foreach_*` ops are themselves a loop over tensors, so the choice only matters
    elsewhere; it stays an explicit option so both paths can be tested against each other anywhere.
    """
    if foreach is not None:
        return foreach
    return all(p.device.type != "cpu" for p in params)


def group_by_device_dtype(*lists: Sequence) -> dict[tuple[torch.device, torch.dtype], list[list]]:
    """Split parallel lists into sub-lists whose first-list tensors share one device and dtype.

    A fused `_foreach` kernel (and `torch.stack` of per-tensor norms) needs one device and dtype, so a
    group with, say, an fp16 embedding and fp32 layers is processed as several lists. Entries of the
    other lists (tensors, floats) follow their first-list tensor.
    """
    groups: dict[tuple[torch.device, torch.dtype], list[list]] = {}
    for i, t in enumerate(lists[0]):
        key = (t.device, t.dtype)
        if key not in groups:
            groups[key] = [[] for _ in lists]
        for j, seq in enumerate(lists):
            groups[key][j].append(seq[i])
    return groups


def new_step(device: torch.device | None = None) -> torch.Tensor:
    """The per-parameter step counter, as torch.optim keeps it: a 0-d float32 tensor on the CPU.

    Being on the CPU, reading it to compute bias corrections on the host costs no device sync;
    being a tensor, it can be put in shared memory (SharedAdam) and is saved by `state_dict`.
    """
    return torch.zeros((), dtype=torch.float32, device=device or "cpu")

"""Small helpers the optimizers share: the foreach default, device/dtype grouping for fused lists, and
cache-sized blocks of them for CPU."""
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


# Fused (foreach) paths on CPU. There an op over a whole parameter list streams it from memory (its
# operands span tens of MB for a large model, more than the cache holds), so a step of several ops
# reads and writes each parameter-sized buffer several times over. Running every op of the step on one
# cache-sized block of the parameters before the next block reads each from memory about once.
# Measured with one thread: an op streams 20-100 GB/s over operands of a few hundred KB to a few MB,
# 12-24 GB/s over the 40 MB of a 10M-parameter float32 list.


def blocks(lists: Sequence[Sequence[torch.Tensor]], size: int):
    """Cut parallel lists of same-shaped tensors into blocks of flat slices, about `size` elements per
    block, in order. Yields (owners, slices): slices[k] is the block's part of lists[k], and owners[j]
    the index, in the lists, of the tensor that the j-th slice of each comes from."""
    pieces, room = [], size                      # (tensor index, start, stop), or stop None: whole tensor
    for i, t in enumerate(lists[0]):
        # Flat slices of tensors laid out differently would not pair up element by element: such a
        # tensor goes into a block whole, whatever its size.
        whole = not all(seq[i].is_contiguous() for seq in lists)
        start, n = 0, t.numel()
        while True:
            take = n - start if whole else min(n - start, room)
            pieces.append((i, start, None if whole else start + take))
            start, room = start + take, room - take
            if room <= 0:
                yield _block(lists, pieces)
                pieces, room = [], size
            if start >= n:
                break
    if pieces:
        yield _block(lists, pieces)


def _block(lists, pieces):
    slices = [[seq[i] if stop is None else seq[i].view(-1)[start:stop] for i, start, stop in pieces]
              for seq in lists]
    return [i for i, _, _ in pieces], slices


def to_device(values: list, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A python list as a tensor on `device` without a host sync: `torch.tensor(values, device=cuda)`
    copies from pageable memory and blocks until the GPU is done; a pinned copy goes asynchronously."""
    t = torch.tensor(values, dtype=dtype)
    if torch.device(device).type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t

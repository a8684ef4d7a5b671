"""Optimizers that torch.optim lacks, in its conventions, and a registry of all of them by name.

    import optim
    opt = optim.build("rmsproptf", model.parameters(), lr=2.5e-4)

Depends on torch only.
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch

from optim.rmsprop_tf import RMSpropTF

# Every torch.optim optimizer by lower-case name, then ours. Ours are added by their modules' imports
# below; a name here is what `--optimizer` and `--g-optimizer`/`--d-optimizer` accept.
REGISTRY: dict[str, Callable[..., torch.optim.Optimizer]] = {
    name.lower(): cls
    for name, cls in vars(torch.optim).items()
    if inspect.isclass(cls) and issubclass(cls, torch.optim.Optimizer) and cls is not torch.optim.Optimizer
}
REGISTRY["rmsproptf"] = RMSpropTF


def names() -> list[str]:
    return sorted(REGISTRY)


def build(name: str, params, **hparams) -> torch.optim.Optimizer:
    """Make optimizer `name` (case-insensitive) over `params`.

    An unknown name or a rejected hyper-parameter raises ValueError with a one-line message.
    """
    key = name.lower()
    if key not in REGISTRY:
        raise ValueError(f"unknown optimizer {name!r}; choose one of: {', '.join(names())}")
    cls = REGISTRY[key]
    accepted = inspect.signature(cls.__init__).parameters
    unknown = [k for k in hparams if k not in accepted]
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        raise ValueError(f"optimizer {name!r} takes no {', '.join(unknown)}")
    try:
        return cls(params, **hparams)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None


__all__ = ["RMSpropTF", "REGISTRY", "build", "names"]

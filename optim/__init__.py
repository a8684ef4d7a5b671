"""Optimizers that torch.optim lacks, in its conventions, and a registry of all of them by name.

    import optim
    opt = optim.build("rmsproptf", model.parameters(), lr=2.5e-4)
    opt = optim.build("lookahead", model.parameters(), base="sgd", k=5, alpha=0.5, lr=0.1, momentum=0.9)

Also here: the K-FAC preconditioner (`optim.KFAC`, which rewrites gradients for any optimizer),
gradient clipping (`optim.clip`) and learning-rate schedules (`optim.schedules`).

Depends on torch only.
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch

from optim import clip, schedules
from optim.adabelief import AdaBelief
from optim.kfac import KFAC
from optim.lamb import LAMB
from optim.lookahead import Lookahead
from optim.rmsprop_tf import RMSpropTF
from optim.shared_adam import SharedAdam

# Every torch.optim optimizer by lower-case name, then ours (below); a name here is what `--optimizer`
# and `--g-optimizer`/`--d-optimizer` accept. K-FAC is a preconditioner, not an optimizer: see KFAC.
REGISTRY: dict[str, Callable[..., torch.optim.Optimizer]] = {
    name.lower(): cls
    for name, cls in vars(torch.optim).items()
    if inspect.isclass(cls) and issubclass(cls, torch.optim.Optimizer) and cls is not torch.optim.Optimizer
}
REGISTRY["rmsproptf"] = RMSpropTF
REGISTRY["lamb"] = LAMB
REGISTRY["adabelief"] = AdaBelief
REGISTRY["lookahead"] = Lookahead
REGISTRY["sharedadam"] = SharedAdam


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


__all__ = ["AdaBelief", "KFAC", "LAMB", "Lookahead", "RMSpropTF", "SharedAdam", "REGISTRY", "build", "clip",
           "names", "schedules"]

"""Lookahead (Zhang, Lucas, Hinton & Ba 2019, "Lookahead Optimizer: k steps forward, 1 step back",
NeurIPS, arXiv:1907.08610, Algorithm 1) over any torch.optim-style optimizer.

The inner ("fast") optimizer steps as usual. Every k of its steps, each group's slow weights phi move
a fraction alpha towards the fast weights theta, and the fast weights restart from there:

    phi <- phi + alpha (theta - phi);   theta <- phi

The slow weights start as the parameters at construction (phi_0 = theta_0), as in the paper; an
implementation that creates them lazily at the first sync makes that first sync a no-op.

    opt = Lookahead(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), k=5, alpha=0.5)
    opt = optim.build("lookahead", model.parameters(), base="adam", k=5, alpha=0.5, lr=3e-4)

Lookahead shares the inner optimizer's `param_groups` (same list, same dicts), so LR schedulers and
`zero_grad` act on both; `k` and `alpha` are per-group hyper-parameters like `lr`. The inner state
(momenta) is kept across syncs, as in the paper's experiments.
"""
from __future__ import annotations

import torch
from torch.optim import Optimizer

from optim._util import use_foreach


def _resolve_base(base):
    if isinstance(base, str):
        from optim import REGISTRY  # the registry imports this module, so look it up lazily

        key = base.lower()
        if key not in REGISTRY or key == "lookahead":
            raise ValueError(f"unknown base optimizer {base!r}; choose one of: "
                             f"{', '.join(sorted(k for k in REGISTRY if k != 'lookahead'))}")
        return REGISTRY[key]
    if isinstance(base, type) and issubclass(base, Optimizer):
        return base
    raise ValueError(f"base must be an optimizer name or class, not {base!r}")


class Lookahead(Optimizer):
    def __init__(self, params, base="adam", k: int = 5, alpha: float = 0.5, **base_hparams):
        """`params` is either an optimizer to wrap (then `base` and `base_hparams` must be left out) or
        parameters / param groups for a new `base` optimizer (a registry name or a class) built with
        `base_hparams`."""
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"Invalid k: {k} (need an integer >= 1)")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"Invalid alpha: {alpha}")
        if isinstance(params, Optimizer):
            if base_hparams:
                raise ValueError(f"hyper-parameters {sorted(base_hparams)} go to the wrapped optimizer, "
                                 "not to Lookahead")
            inner = params
        else:
            inner = _resolve_base(base)(params, **base_hparams)
        self.inner = inner
        self._constructed = False
        # Optimizer.__init__ runs add_param_group on each of the inner's group dicts, which adds our
        # defaults (k, alpha) to those same dicts; afterwards both objects hold one list.
        super().__init__(inner.param_groups, dict(inner.defaults, k=k, alpha=alpha))
        self.param_groups = inner.param_groups
        for group in self.param_groups:
            self._init_slow(group)
        self._constructed = True

    def _init_slow(self, group):
        group.setdefault("lookahead_step", 0)
        for p in group["params"]:
            state = self.state[p]
            if "slow" not in state:
                state["slow"] = p.detach().clone(memory_format=torch.preserve_format)

    def add_param_group(self, param_group):
        if not self._constructed:  # called by Optimizer.__init__ on the inner's own groups
            super().add_param_group(param_group)
            return
        self.inner.add_param_group(param_group)
        group = self.inner.param_groups[-1]
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self.param_groups = self.inner.param_groups
        self._init_slow(group)

    @torch.no_grad()
    def step(self, closure=None):
        loss = self.inner.step(closure)
        for group in self.param_groups:
            group["lookahead_step"] += 1
            if group["lookahead_step"] % group["k"] != 0:
                continue
            fast = list(group["params"])
            for p in fast:  # a parameter added to the group by hand after construction
                if "slow" not in self.state[p]:
                    self.state[p]["slow"] = p.detach().clone(memory_format=torch.preserve_format)
            slow = [self.state[p]["slow"] for p in fast]
            # The sync follows the inner optimizer's `foreach` choice where it has one.
            if use_foreach(group.get("foreach"), fast):
                torch._foreach_lerp_(slow, fast, group["alpha"])
                torch._foreach_copy_(fast, slow)
            else:
                for s, p in zip(slow, fast):
                    s.add_(p - s, alpha=group["alpha"])
                    p.copy_(s)
        return loss

    def zero_grad(self, set_to_none: bool = True):
        self.inner.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        """Both halves: the inner optimizer's state_dict and ours (slow weights, counters in the groups)."""
        return {"inner": self.inner.state_dict(), "lookahead": super().state_dict()}

    def load_state_dict(self, state_dict):
        if set(state_dict) != {"inner", "lookahead"}:
            raise ValueError("not a Lookahead state_dict (expected keys 'inner' and 'lookahead')")
        # Optimizer.load_state_dict replaces param_groups with new dicts, for us and for the inner
        # optimizer alike; load ours, then the inner's (its saved groups are the same dicts, so they
        # carry k, alpha and the counters too), then share its list again.
        super().load_state_dict(state_dict["lookahead"])
        self.inner.load_state_dict(state_dict["inner"])
        self.param_groups = self.inner.param_groups

    def __getstate__(self):  # pickling / deepcopy: Optimizer's own keeps only defaults, state, groups
        return {**super().__getstate__(), "inner": self.inner, "_constructed": True}

    def __repr__(self):
        return f"Lookahead({self.inner!r})"


__all__ = ["Lookahead"]

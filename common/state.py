"""The run state: every stateful part of a run by name, saved and restored by one generic routine.

    state = RunState(q_net=q_net, target_net=target_net, optimizer=optimizer, grad_scaler=amp,
                     rng=RNG(rng), counters=Counters(global_step=0, update_debt=0))
    state.restore(saved, path)          # --resume: every part from the checkpoint, one error path
    checkpoint.save(path, state.state_dict(), kind="dqn")

A part is anything with `state_dict()` / `load_state_dict()` (torch.distributed.checkpoint's
`Stateful` contract: modules, optimizers, schedulers, grad scalers, replay memories, K-FAC), stored
under its name, which is its checkpoint key. Plain values that a loop mutates (the step, the update
debt) live in a `Counters`, whose fields are stored flat, each under its own key, so that checkpoint
keys stay what earlier versions wrote (`global_step` at the top, not `counters.global_step`).
Small adapters make the rest Stateful: `RNG` (python, numpy, torch and CUDA generators), `Tensor`
(a tensor restored in place, e.g. SAC's log-alpha), `Adapter` (a pair of functions).

Depends on torch and common.seeding.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np
import torch

from common.errors import fail
from common.seeding import rng_state, set_rng_state


@runtime_checkable
class Stateful(Protocol):
    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> Any: ...


class Counters:
    """A loop's plain values (ints, floats), read and written as attributes (`c.global_step += 4`);
    stored flat in checkpoints, one key each. `defaults` gives the value a checkpoint of an earlier
    version that lacks a key restores to (a key without one is required)."""

    flat = True

    def __init__(self, defaults: dict[str, Any] | None = None, **values):
        object.__setattr__(self, "_names", tuple(values))
        object.__setattr__(self, "_defaults", dict(defaults or {}))
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value) -> None:
        if name not in self._names:
            raise AttributeError(f"Counters has no field {name!r} (fields: {', '.join(self._names)})")
        object.__setattr__(self, name, value)

    def state_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._names}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in self._names:
            if name in state:
                value = state[name]
                setattr(self, name, type(getattr(self, name))(value) if isinstance(getattr(self, name), (int, float))
                        and not isinstance(getattr(self, name), bool) else value)
            elif name in self._defaults:
                setattr(self, name, self._defaults[name])
            else:
                raise KeyError(name)

    def __repr__(self) -> str:
        return "Counters(" + ", ".join(f"{k}={v!r}" for k, v in self.state_dict().items()) + ")"


class RNG:
    """Python's, numpy's legacy, torch's and CUDA's generators, and a numpy Generator of the run's own."""

    def __init__(self, generator: np.random.Generator | None = None):
        self.generator = generator

    def state_dict(self) -> dict:
        return rng_state(self.generator)

    def load_state_dict(self, state: dict) -> None:
        set_rng_state(state, self.generator)


class Tensor:
    """A tensor (a parameter, a fixed noise batch) saved on the CPU and restored in place, on its device."""

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor

    def state_dict(self) -> torch.Tensor:
        return self.tensor.detach().cpu().clone()

    def load_state_dict(self, state: torch.Tensor) -> None:
        if not isinstance(state, torch.Tensor) or state.shape != self.tensor.shape:
            raise ValueError(f"a tensor of shape {tuple(self.tensor.shape)} was expected, got "
                             f"{tuple(state.shape) if isinstance(state, torch.Tensor) else type(state).__name__}")
        with torch.no_grad():
            self.tensor.copy_(state)


class Adapter:
    """Stateful from two functions, for parts whose state lives elsewhere (an env's normalization
    statistics, a torch.Generator's get_state/set_state)."""

    def __init__(self, save: Callable[[], Any], load: Callable[[Any], None]):
        self._save, self._load = save, load

    def state_dict(self):
        return self._save()

    def load_state_dict(self, state) -> None:
        self._load(state)


class RunState:
    """Every stateful part of a run by checkpoint key, in the order given (restoring follows it: an
    optimizer after its network). `optional` keys restore only when the checkpoint holds them (a grad
    scaler that earlier versions did not save, a replay memory saved only with --save-replay).
    `resume_only` parts are left out of `state_dict(resume=False)`: what only resuming needs (a replay
    memory, up to GBs) stays out of the policy snapshots (final.pt, best.pt)."""

    def __init__(self, **parts):
        self._parts: dict[str, Any] = {}
        self._optional: set[str] = set()
        self._resume_only: set[str] = set()
        for name, part in parts.items():
            self.add(name, part)

    def add(self, name: str, part, optional: bool = False, resume_only: bool = False) -> "RunState":
        if not isinstance(part, Stateful):
            raise TypeError(f"{name}: {type(part).__name__} has no state_dict()/load_state_dict()")
        if name in self._parts:
            raise ValueError(f"the run state already has a part named {name!r}")
        self._parts[name] = part
        if optional:
            self._optional.add(name)
        if resume_only:
            self._resume_only.add(name)
        return self

    def __getitem__(self, name: str):
        return self._parts[name]

    def __contains__(self, name: str) -> bool:
        return name in self._parts

    def state_dict(self, resume: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, part in self._parts.items():
            if not resume and name in self._resume_only:
                continue
            if getattr(part, "flat", False):
                out.update(part.state_dict())
            else:
                out[name] = part.state_dict()
        return out

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        for name, part in self._parts.items():
            if getattr(part, "flat", False):
                part.load_state_dict(saved)
            elif name in saved:
                part.load_state_dict(saved[name])
            elif name not in self._optional:
                raise KeyError(name)

    def restore(self, saved: dict[str, Any], path) -> None:
        """Every part from the checkpoint `saved` (read from `path`): what does not fit is one line."""
        try:
            self.load_state_dict(saved)
        except KeyError as e:
            fail(f"cannot resume from {path}: it has no {e.args[0]!r} (not a complete checkpoint of this run)")
        except (RuntimeError, ValueError, TypeError, IndexError) as e:
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            fail(f"cannot resume from {path}: it does not match this run ({first})")

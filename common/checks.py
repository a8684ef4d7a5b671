"""Field checks: constraints declared on config fields as data, checked generically before anything
is built, each failure one line naming the flag.

    total_timesteps: Annotated[PresetInt, POSITIVE] = None
    gamma: Annotated[float, UNIT] = 0.99
    num_envs: Annotated[int, POSITIVE, limit(1024, "one process steps them all")] = 1

`check_fields(cfg)` applies every field's rules to its value (a None value, an unset preset field or
a hyper-parameter the chosen optimizer does not take, is skipped; tuples are checked element by
element), after checking that every float is one a float32 holds, which tensors and optimizers use:
1e39 is not a learning rate. Trainers call it again in `prepare()` once presets are filled, and keep
there only the checks that relate fields to each other.
"""
from __future__ import annotations

import dataclasses
import math
import os
import struct
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from common.errors import fail


def flag(name: str) -> str:
    return name.replace("_", "-")


# The largest finite float32: tensors and optimizers hold their numbers as float32.
FLOAT32_MAX = 3.4028234663852886e38


def as_float32(x: float) -> float:
    """`x` as a float32 holds it: rounded to nearest, +-inf past FLOAT32_MAX, 0 below its smallest
    subnormal (1.4e-45)."""
    try:
        return struct.unpack("f", struct.pack("f", x))[0]
    except OverflowError:
        return math.copysign(math.inf, x)


@dataclass(frozen=True)
class Rule:
    """A constraint on one field's value: `ok(value)`, or the flag `what` (e.g. "must be positive")."""

    ok: Callable[[Any], bool]
    what: str | Callable[[Any], str]
    """What the value must be, or a function of the refused value that says it."""

    def check(self, name: str, value) -> None:
        for v in value if isinstance(value, (tuple, list)) else (value,):
            if v is not None and not self.ok(v):
                shown = " ".join(map(str, value)) if isinstance(value, (tuple, list)) else value
                what = self.what(v) if callable(self.what) else self.what
                fail(f"--{flag(name)} {what} (got {shown})")


def _positive(v) -> bool:
    return v > 0 and (not isinstance(v, float) or as_float32(v) > 0)


POSITIVE = Rule(_positive, lambda v: "must be positive" if not v > 0 else
                "must be positive as a float32, which tensors and optimizers use: it is 0 in float32, whose "
                "smallest is 1.4e-45")
NON_NEGATIVE = Rule(lambda v: v >= 0, "must not be negative")
UNIT = Rule(lambda v: 0.0 <= v <= 1.0, "must be in [0, 1]")
BELOW_ONE = Rule(lambda v: 0.0 <= v < 1.0, "must be in [0, 1)")


LAYER_WIDTH = Rule(lambda v: 1 <= v <= 1 << 16, "must be between 1 and 65,536 units per layer")


def limit(bound: int, why: str) -> Rule:
    """At most `bound`, because `why` (one process steps them all, ...)."""
    return Rule(lambda v: v <= bound, f"must be at most {bound:,} ({why})")


def between(low: float, high: float, why: str = "") -> Rule:
    return Rule(lambda v: low <= v <= high, f"must be in [{low}, {high}]" + (f" ({why})" if why else ""))


def rules_of(config_cls: type) -> dict[str, list[Rule]]:
    """Each field's declared rules, from its `Annotated[...]` type."""
    hints = typing.get_type_hints(config_cls, include_extras=True)
    out = {}
    for f in dataclasses.fields(config_cls):
        rules = [m for m in getattr(hints.get(f.name), "__metadata__", ()) if isinstance(m, Rule)]
        if rules:
            out[f.name] = rules
    return out


def check_fields(cfg) -> None:
    """Every float one a float32 holds (tuples included), then every field's declared rules."""
    for name, value in dataclasses.asdict(cfg).items():
        for v in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(v, float) and not math.isfinite(v):
                fail(f"--{flag(name)} must be a finite number (got {value})")
            if isinstance(v, float) and not math.isfinite(as_float32(v)):
                fail(f"--{flag(name)} must be a number a float32 holds, at most {FLOAT32_MAX:.4g} in size "
                     f"(got {v:g}): tensors and optimizers use float32")
    for name, rules in rules_of(type(cfg)).items():
        for rule in rules:
            rule.check(name, getattr(cfg, name))


def check_common(cfg) -> None:
    """A writable place for the run folder: the checkpoint's folder when a --resume goes on there,
    --logdir otherwise (nothing for --eval)."""
    from common.run import resume_folder

    if cfg.eval:
        return
    folder = resume_folder(cfg) if cfg.resume else None
    if folder is not None:
        writable_folder(folder, "--resume: the checkpoint's folder")
    else:
        writable_folder(Path(cfg.logdir), "--logdir")


def positive(cfg, *names: str) -> None:
    """Each field is > 0; a float also as a float32, which tensors and optimizers use (1e-50 is 0 there)."""
    for name in names:
        value = getattr(cfg, name)
        if not value > 0:
            fail(f"--{flag(name)} must be positive (got {value})")
        if isinstance(value, float) and not as_float32(value) > 0:
            fail(f"--{flag(name)} must be positive as a float32, which tensors and optimizers use (got {value:g}, "
                 f"0 in float32; the smallest is 1.4e-45)")


def non_negative(cfg, *names: str) -> None:
    for name in names:
        if not getattr(cfg, name) >= 0:
            fail(f"--{flag(name)} must not be negative (got {getattr(cfg, name)})")


def in_unit_interval(cfg, *names: str) -> None:
    for name in names:
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            fail(f"--{flag(name)} must be in [0, 1] (got {getattr(cfg, name)})")


def at_most(cfg, name: str, bound: int, why: str) -> None:
    if getattr(cfg, name) > bound:
        fail(f"--{flag(name)} must be at most {bound:,} ({why}; got {getattr(cfg, name):,})")


def check_grad_accum(cfg, batch_field: str) -> None:
    """--grad-accum K is at least 1 and slices the batch (`batch_field`, or a number) evenly."""
    if cfg.grad_accum < 1:
        fail(f"--grad-accum must be at least 1 (got {cfg.grad_accum})")
    batch = getattr(cfg, batch_field) if isinstance(batch_field, str) else batch_field
    if batch % cfg.grad_accum:
        what = f"--{flag(batch_field)} {batch}" if isinstance(batch_field, str) else f"the minibatch of {batch}"
        fail(f"--grad-accum {cfg.grad_accum} does not divide {what} into equal micro-batches")


def writable_folder(path: Path, what: str) -> None:
    """`path` is, or can be made as, a folder we can write in; else one line naming it."""
    try:
        probe = path
        while not (probe.exists() or probe.is_symlink()):
            if probe.parent == probe:
                break
            probe = probe.parent
        if probe.is_symlink() and not probe.exists():
            fail(f"{what} {path}: {probe} is a broken symbolic link")
        if probe.exists() and not probe.is_dir():
            fail(f"{what} {path}: {probe} is a file, not a folder")
        writable = os.access(probe, os.W_OK | os.X_OK)
    except OSError as e:  # e.g. a name too long for the file system
        fail(f"{what} {path}: {e.strerror or e}")
    if not writable:
        fail(f"{what} {path}: {probe} is not writable")


def physical_memory() -> int:
    """Bytes of RAM on this machine (a huge number where the platform cannot say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def fits_in_memory(build: Callable[[], Any], copies: int, what: str) -> None:
    """Refuse, with one line, networks whose `copies` float32 copies (weights, gradients, optimizer
    state, targets) would not fit in RAM. The network is built on the meta device: nothing is allocated,
    so a typo such as --hidden-sizes 100000 100000 costs nothing to catch."""
    import torch

    with torch.device("meta"):
        try:
            module = build()
        except (RuntimeError, ValueError) as e:
            fail(f"cannot build {what}: {str(e).splitlines()[0][:160]}")
    n = sum(p.numel() for p in module.parameters())
    need = n * 4 * copies
    if need > physical_memory():
        fail(f"{what} would have {n:,} parameters, {need / 2**30:,.1f} GiB for weights, gradients and optimizer "
             f"state: more than this machine's {physical_memory() / 2**30:,.1f} GiB")


def family_default(cfg, name: str, default, optimizer: str, applies: bool, what: str, who: str) -> None:
    """optim's policy for a hyper-parameter (`what`) that only some optimizers (`who`) take: left unset
    it takes `default` where it `applies` and None elsewhere (so config.json records only what was
    used); typed for an optimizer it does not apply to, it is refused with one line."""
    if getattr(cfg, name) is None:
        setattr(cfg, name, default if applies else None)
    elif not applies:
        fail(f"--{flag(name)}: optimizer {optimizer!r} takes no {what}; --{flag(name)} is for {who}")

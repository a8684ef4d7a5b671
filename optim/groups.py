"""Parameter groups by module name, each with its own multiple of the learning rate: a smaller rate
for a pretrained or shared trunk than for a head (`--lr-mult torso=0.1`).

    groups = optim.groups.by_pattern(model.named_parameters(), {"torso": 0.1}, lr=2.5e-4)
    opt = optim.build("adam", groups, lr=2.5e-4)

A pattern names a module anywhere in a parameter's dotted name ("body" matches "q1.body.net.0.weight"),
or, with a wildcard (* ? [), the whole name as fnmatch reads it. A parameter takes the first pattern
that matches it (in the order given) and the factor 1 if none does. Each group keeps its factor as
`lr_mult`, which schedules leave alone: they scale every group's own lr, so the ratios hold.
"""
from __future__ import annotations

import fnmatch
from typing import Iterable


def parse(items: Iterable[str]) -> dict[str, float]:
    """`("torso=0.1", "head=1")` -> {"torso": 0.1, "head": 1.0}; ValueError (one line) for a bad item."""
    out: dict[str, float] = {}
    for item in items:
        pattern, sep, value = item.partition("=")
        pattern = pattern.strip()
        try:
            factor = float(value)
        except ValueError:
            factor = float("nan")
        if not sep or not pattern or not factor >= 0 or factor == float("inf"):
            raise ValueError(f"{item!r}: write PATTERN=FACTOR with a factor >= 0 (e.g. torso=0.1)")
        if pattern in out:
            raise ValueError(f"{pattern!r} is given twice")
        out[pattern] = factor
    return out


def matches(pattern: str, name: str) -> bool:
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return f".{pattern}." in f".{name}."


def by_pattern(named_parameters, mults: dict[str, float], lr: float) -> list[dict]:
    """Param groups (one per factor, in the order first met) with lr = factor * `lr`; ValueError naming
    a pattern that matches no parameter."""
    named = [(n, p) for n, p in named_parameters if p.requires_grad]
    groups: dict[float, dict] = {}
    used = set()
    for name, p in named:
        factor, label = 1.0, "the rest"
        for pattern, f in mults.items():
            if matches(pattern, name):
                factor, label = f, pattern
                used.add(pattern)
                break
        group = groups.setdefault(factor, {"params": [], "lr": factor * lr, "lr_mult": factor, "patterns": []})
        group["params"].append(p)
        if label not in group["patterns"]:
            group["patterns"].append(label)
    unused = [p for p in mults if p not in used]
    if unused:
        modules = sorted({n.split(".")[0] for n, _ in named})
        raise ValueError(f"{unused[0]!r} matches no parameter; the top-level modules are {', '.join(modules)}")
    return list(groups.values())


def describe(groups: list[dict], what: str = "") -> str:
    """`lr-mult: torso x0.1 (8 tensors, 1,684,128 weights); the rest x1 (2 tensors, 2,052 weights)`."""
    parts = []
    for g in groups:
        n = sum(p.numel() for p in g["params"])
        parts.append(f"{', '.join(g['patterns'])} x{g['lr_mult']:g} ({len(g['params'])} tensors, {n:,} weights)")
    return f"lr-mult{' (' + what + ')' if what else ''}: " + "; ".join(parts)


__all__ = ["by_pattern", "describe", "matches", "parse"]

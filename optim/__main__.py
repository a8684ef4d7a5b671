"""`python -m optim`: the registry's optimizers with their defaults, and the pairings of task and
optimizer that this toolkit's trainers use by default, each with the paper it comes from.

    python -m optim            # both tables
    python -m optim adabound   # one optimizer's defaults, docstring's first line and what its eps/alpha mean
    python -m optim --schedules   # the --lr-schedule names, their parameters and defaults
"""
from __future__ import annotations

import inspect
import shutil
import sys
import textwrap

import optim

# Where each optimizer comes from (torch.optim's own: its class).
SOURCES = {
    "rmsproptf": "Tieleman & Hinton 2012, as TensorFlow/DeepMind compute it (eps inside the root)",
    "lamb": "You et al. 2019, arXiv:1904.00962",
    "adabelief": "Zhuang et al. 2020, arXiv:2010.07468",
    "lookahead": "Zhang et al. 2019, arXiv:1907.08610",
    "sharedadam": "Adam (Kingma & Ba 2015) with its state in shared memory, for Hogwild!-style processes",
    "adabound": "Luo et al. 2019, arXiv:1902.09843 (as the authors' release computes it)",
    "swats": "Keskar & Socher 2017, arXiv:1712.07628",
}

# What each trainer uses unless told otherwise: (task, optimizer, hyper-parameters, source). The
# trainers' presets are the truth; tests/test_optim.py checks this table against them.
PAIRINGS = [
    ("DQN, Atari", "rmsproptf", "lr 2.5e-4, alpha 0.95, eps 0.01 (centred, on the summed Huber loss)",
     "Mnih et al. 2015, Extended Data Table 1, as DeepMind's Lua code ran it"),
    ("DQN, classic control", "adam", "lr 2.3e-3", "rl-baselines3-zoo, hyperparams/dqn.yml (CartPole-v1)"),
    ("Rainbow, Atari", "adam", "lr 6.25e-5, eps 1.5e-4", "Hessel et al. 2018, Table 1"),
    ("Rainbow, Atari 100k", "adam", "lr 1e-4, eps 1.5e-4", "van Hasselt et al. 2019 (data-efficient Rainbow)"),
    ("PPO, Atari", "adam, one over actor and critic", "lr 2.5e-4 annealed linearly to 0, eps 1e-5",
     "Schulman et al. 2017; CleanRL's ppo_atari"),
    ("PPO, MuJoCo", "adam, one over actor and critic", "lr 3e-4 annealed linearly to 0, eps 1e-5",
     "Schulman et al. 2017; CleanRL's ppo_continuous_action"),
    ("SAC, MuJoCo", "kfac on the critics: Adam in the eigenbasis of its factors (eigen-adam); the actor on adam",
     "policy and Q lr 1e-3, Adam's betas (0.9, 0.999), no damping, factors every 10 updates, eigenbases every 30; "
     "--optimizer adam: plain SAC, lr 1e-3",
     "Haarnoja et al. 2018 (SAC); Tianshou's mujoco_sac.py (lr 1e-3, measured better here than the paper's "
     "3e-4); George et al. 2018 (EKFAC), Vyas et al. 2024 (SOAP)"),
    ("DCGAN, images", "adam generator, rmsprop discriminator", "both lr 2e-4; G betas (0.5, 0.999); D alpha 0.9",
     "Radford et al. 2016 (Adam 2e-4, beta1 0.5); the RMSprop discriminator is this toolkit's sources' pairing"),
]

SHOWN = ("lr", "betas", "eps", "alpha", "momentum", "weight_decay", "final_lr", "switch_step")


def defaults(name: str) -> str:
    cls = optim.REGISTRY[name]
    params = inspect.signature(cls.__init__).parameters
    out = []
    for k in SHOWN:
        p = params.get(k)
        if p is not None and p.default is not inspect.Parameter.empty:
            out.append(f"{k}={p.default}")
    return ", ".join(out) or "(see its docstring)"


def means(name: str) -> str:
    """`eps adam, alpha sq-decay`: the declared meanings (optim.SEMANTICS); `-` where none is declared."""
    s = optim.semantics(name)
    if s is None:
        return "-"
    return ", ".join(f"{k} {v}" for k, v in (("eps", s.eps), ("alpha", s.alpha)) if v is not None) or "-"


def source(name: str) -> str:
    cls = optim.REGISTRY[name]
    return SOURCES.get(name, f"torch.optim.{cls.__name__}")


def prose(text: str) -> str:
    """A paragraph wrapped to the terminal's width (120 columns when not a terminal)."""
    return textwrap.fill(text, shutil.get_terminal_size((120, 24)).columns)


def table(header: list[str], rows: list[list[str]], width: int | None = None) -> str:
    """Columns as wide as their cells, the widest ones wrapped so that a line fits `width` (the terminal's,
    or 120 columns when not a terminal)."""
    width = width or shutil.get_terminal_size((120, 24)).columns
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    while sum(widths) + 2 * (len(widths) - 1) > width and max(widths) > 12:
        widths[widths.index(max(widths))] -= 1  # the widest column gives a character, until the line fits
    out = []
    for cells in [header, ["-" * w for w in widths], *rows]:
        wrapped = [textwrap.wrap(c, w, break_long_words=False) or [""] for c, w in zip(cells, widths)]
        for k in range(max(map(len, wrapped))):
            out.append("  ".join((col[k] if k < len(col) else "").ljust(w) for col, w in zip(wrapped, widths)).rstrip())
    return "\n".join(out)


def main(args: list[str] | None = None) -> None:
    args = sys.argv[1:] if args is None else args
    if args and args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return
    if args and args[0] == "--schedules":
        from optim.schedules import NAMED

        rows = [[name, ", ".join(f"{k}={'(required)' if v is None else v}" for k, v in params.items()) or "-", what]
                for name, (what, params) in NAMED.items()]
        print(prose("--lr-schedule NAME[:key=value,...][ then NAME...], counted in optimizer updates; every stage "
                    "but the last takes steps=N:") + "\n")
        print(table(["name", "parameters", "what it does"], rows))
        return
    if args:
        name = args[0].lower()
        if name not in optim.REGISTRY:
            print(f"error: unknown optimizer {args[0]!r}; choose one of: {', '.join(optim.names())}", file=sys.stderr)
            sys.exit(2)
        cls = optim.REGISTRY[name]
        doc = (cls.__dict__.get("__doc__") or sys.modules[cls.__module__].__doc__ or "").strip().split("\n")[0]
        print(f"{name}: {defaults(name)}\n{source(name)}\n{doc}")
        for hp, meaning, table_ in (("eps", optim.eps_means(name), optim.EPS_MEANINGS),
                                    ("alpha", optim.alpha_means(name), optim.ALPHA_MEANINGS)):
            if meaning is not None:
                print(f"{hp} ({meaning}): {table_[meaning]}")
        return
    rows = [[n, defaults(n), means(n), source(n)] for n in optim.drivable_names()]
    print(prose("Optimizers (--optimizer NAME in every trainer; K-FAC is a curvature: SAC's --optimizer kfac, "
                "--kfac-combine):") + "\n")
    print(table(["name", "defaults", "eps/alpha mean", "source"], rows))
    print("\n" + prose("In the registry but not offered (a trainer's backward(); step() loop cannot drive them): "
                       + "; ".join(f"{n} ({why})" for n, why in optim.NOT_DRIVABLE.items())))
    print("\n" + prose("eps/alpha mean: what a trainer's family defaults rely on (optim.SEMANTICS; '-': none "
                       "declared, so none given). Adam-family eps defaults go to eps " + ", ".join(optim.ADAM_EPS)
                       + " (optim.ADAMS), RMSprop alpha to alpha sq-decay (optim.RMSPROPS):"))
    used = ([("eps", k, v) for k, v in optim.EPS_MEANINGS.items()]
            + [("alpha", k, v) for k, v in optim.ALPHA_MEANINGS.items()])
    print(table(["", "meaning", "what it is"], [[hp, k, v] for hp, k, v in used]))
    print("\nWhat each trainer uses by default:\n")
    print(table(["task", "optimizer", "hyper-parameters", "source"], [list(p) for p in PAIRINGS]))


if __name__ == "__main__":
    main()

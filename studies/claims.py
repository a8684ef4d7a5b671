"""The sources' optimizer claims, each run as a grid and settled with the 95% interval of its gain.

    python -m studies.claims rainbow-breakout --budget small    # fits a CPU hour (2 workers)
    python -m studies.claims sac-hopper --budget small          # 100k steps, 3 seeds: about 1.5 hours
    python -m studies.claims sac-halfcheetah --budget paper     # the papers' budgets: a GPU's work
    python -m studies.claims all --budget small

Each claim compares two settings of one trainer that differ only in the optimizer (the treatment the
claim favours and its control), over seeds, with everything else at the trainer's preset. Its gain is
measured the way the claim is worded (GAINS), with a 95% bootstrap interval that resamples each
setting's seeds independently (rliable's StratifiedIndependentBootstrap, studies.stats). The verdict:

- supported: the interval excludes zero and contains the claimed size;
- smaller than claimed / larger than claimed: it excludes zero and lies below / above the claimed size;
- not supported: it contains zero, or it lies below zero (the other way).

A claim with no size (the DCGAN pairing on 2D mixtures, where the claim's Inception Score has no
meaning) is supported when the interval lies above zero. A relative gain ("22% more") needs the
control's scores above zero; where a control run scored 0 or less, the difference's interval is given
instead, and the verdict is "not supported" if it contains zero, else "above zero, size undefined". The runs
are a `studies.grid` in `OUT/NAME/BUDGET/`, resumable the same way; `OUT/NAME/BUDGET/verdict.md` gives the
verdict, the gain, the budget it ran at and the grid's table.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import tyro

from common import cli
from common.errors import exits_cleanly, fail
from studies import grid, stats


@dataclass(frozen=True)
class Budget:
    seeds: int
    steps: int
    eval_interval: int
    workers: int = 2
    set: tuple[str, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class Claim:
    statement: str
    source: str
    agent: str
    env: str
    treatment: str
    control: str
    gain: Literal["relative", "difference", "sample_efficiency"]
    claimed: Optional[float]
    """The claimed gain in the gain's units (0.22 for 22% more); None: only its direction."""
    budgets: dict = field(default_factory=dict)
    metric: Optional[str] = None
    needs: Optional[str] = None
    """Why the claim cannot run here, if it cannot (checked at start); None: it can."""


# SAC's claims on MuJoCo tasks (HalfCheetah, Hopper): both optimizers under the same budgets
SAC_MUJOCO_BUDGETS = {
    "small": Budget(seeds=3, steps=100_000, eval_interval=10_000, set=("eval_episodes=5",),
                    note="100k env steps, learning from step 5,000 (the preset's); about 1.5 hours on 2 CPU cores"),
    "paper": Budget(seeds=5, steps=1_000_000, eval_interval=10_000),
}

CLAIMS = {
    "rainbow-breakout": Claim(
        statement="Rainbow with Adam scores 22% more than with RMSprop on Breakout",
        source="the toolkit's sources, after Hessel et al. 2018, who chose Adam over RMSprop for Rainbow",
        agent="rainbow", env="Breakout", treatment="adam", control="rmsproptf", gain="relative", claimed=0.22,
        budgets={
            "small": Budget(seeds=3, steps=10_000, eval_interval=10_000, set=("preset=atari100k", "eval_episodes=3"),
                            note="data-efficient Rainbow (van Hasselt et al. 2019), 10k agent steps: a tenth of "
                                 "its Atari 100k budget; scored by the final evaluation alone"),
            "paper": Budget(seeds=5, steps=10_000_000, eval_interval=250_000,
                            note="the atari preset, 10M agent steps (the paper ran 50M)"),
        }),
    "sac-halfcheetah": Claim(
        statement="SAC with K-FAC is 40% more sample-efficient than with Adam on HalfCheetah",
        source="the toolkit's sources (K-FAC: Martens & Grosse 2015; SAC: Haarnoja et al. 2018)",
        agent="sac", env="HalfCheetah", treatment="kfac", control="adam", gain="sample_efficiency", claimed=0.40,
        budgets=SAC_MUJOCO_BUDGETS),
    "sac-hopper": Claim(
        statement="SAC with K-FAC is 40% more sample-efficient than with Adam on Hopper",
        source="the toolkit's sources, the HalfCheetah claim carried to a second MuJoCo task",
        agent="sac", env="Hopper", treatment="kfac", control="adam", gain="sample_efficiency", claimed=0.40,
        budgets=SAC_MUJOCO_BUDGETS),
    "dcgan": Claim(
        statement="A DCGAN with an Adam generator and an RMSprop discriminator reaches Inception Score 7.8 on "
                  "CIFAR-10, 1.2 above SGD for both",
        source="the toolkit's sources (DCGAN: Radford et al. 2016, Adam for both at 2e-4)",
        agent="dcgan", env="grid25", treatment="adam/rmsprop", control="sgd/sgd", gain="difference", claimed=None,
        metric="metrics/modes",
        budgets={
            "small": Budget(seeds=5, steps=5_000, eval_interval=1_000,
                            note="the 2D grid of 25 Gaussians (Inception Score has no meaning there: "
                                 "the gain is in modes covered, and only its sign is claimed)"),
            "paper": Budget(seeds=5, steps=20_000, eval_interval=1_000, note="grid25 at its preset length"),
        }),
    "dcgan-cifar10": Claim(
        statement="A DCGAN with an Adam generator and an RMSprop discriminator reaches Inception Score 7.8 on "
                  "CIFAR-10, 1.2 above SGD for both",
        source="the toolkit's sources (DCGAN: Radford et al. 2016)",
        agent="dcgan", env="cifar10", treatment="adam/rmsprop", control="sgd/sgd", gain="difference", claimed=1.2,
        metric="metrics/is",
        budgets={
            "small": Budget(seeds=2, steps=2_000, eval_interval=1_000,
                            set=("fidelity_interval=2000", "fidelity_samples=5000", "download=False")),
            "paper": Budget(seeds=5, steps=100_000, eval_interval=5_000,
                            set=("fidelity_interval=10000", "download=False")),
        },
        needs="cifar10"),
}


# ------------------------------------------------------------------------------------------------
# Gains: statistic(treatment, control) on arrays (..., runs, tasks[, points]), one number per leading index
# ------------------------------------------------------------------------------------------------


def relative(t: np.ndarray, c: np.ndarray) -> np.ndarray:
    """How much more the treatment scores, as a fraction of the control's mean final score."""
    return stats.mean(t) / stats.mean(c) - 1.0


def difference(t: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Treatment's mean final score minus the control's."""
    return stats.mean(t) - stats.mean(c)


def sample_efficiency(steps: np.ndarray):
    """Steps the control's mean curve takes to reach a return, over the steps the treatment's takes,
    minus 1 ("40% more sample-efficient" = the control needs 1.4x the steps). The return is the lower of
    the two final means, which both curves reach within the budget, so the ratio always exists."""
    def gain(t: np.ndarray, c: np.ndarray) -> np.ndarray:
        mt, mc = t.mean(axis=(-3, -2)), c.mean(axis=(-3, -2))  # mean curves (..., points)
        level = np.minimum(mt[..., -1], mc[..., -1])
        return stats.steps_to_reach(mc, steps, level) / stats.steps_to_reach(mt, steps, level) - 1.0
    return gain


def verdict(gain: stats.Estimate, claimed: float | None) -> str:
    if gain.low <= 0.0 <= gain.high or gain.high < 0.0:
        return "not supported"
    if claimed is None or gain.low <= claimed <= gain.high:
        return "supported"
    return "smaller than claimed" if gain.high < claimed else "larger than claimed"


def shown(value: float, kind: str) -> str:
    return f"{100 * value:+.1f}%" if kind in ("relative", "sample_efficiency") else f"{value:+.2f}"


def curves_of(results: list, name: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """One setting's runs' curves as (runs, 1, points) on the steps they share."""
    r = next(r for r in results if r.setting.name == name)
    if not r.curves:
        fail(f"no run of {name} finished with {metric!r} logged: nothing to measure the claim on")
    n = min(len(c.steps) for c in r.curves)
    steps = r.curves[0].steps[:n].astype(np.float64)
    for c in r.curves:
        if not np.array_equal(c.steps[:n], r.curves[0].steps[:n]):
            fail(f"the runs of {name} were evaluated at different steps (an older version of the trainers "
                 "shifted them on resume); rerun them with another --out")
    return np.stack([c.values[:n] for c in r.curves])[:, None, :], steps


# ------------------------------------------------------------------------------------------------


@dataclass
class Config:
    """Run one of the sources' optimizer claims (or all) at a budget and state its verdict."""

    name: tyro.conf.Positional[Literal["rainbow-breakout", "sac-halfcheetah", "sac-hopper", "dcgan", "dcgan-cifar10",
                                       "all"]]
    """Which claim: rainbow-breakout, sac-halfcheetah, sac-hopper, dcgan (2D mixtures), dcgan-cifar10 (needs the
    data and Inception weights), or all of them."""
    budget: Literal["small", "paper"] = "small"
    """small: a CPU's budget with 2 workers (an hour; SAC's, about 1.5 hours each); paper: the papers' budgets,
    for a GPU."""
    out: str = "runs/claims"
    """Folder of the claims' grids and verdicts."""
    workers: Optional[int] = None
    """Runs at once (default: the budget's)."""
    data_dir: str = "data"
    """Where CIFAR-10 lives (dcgan-cifar10)."""
    device: str = "auto"
    """Passed to every run."""


def unavailable(claim: Claim, cfg: Config) -> str | None:
    if claim.needs == "cifar10":
        from gans import metrics

        if not (Path(cfg.data_dir) / "cifar-10-batches-py").is_dir():
            return f"CIFAR-10 is not in {cfg.data_dir}/cifar-10-batches-py (download it, or pass --data-dir)"
        missing = metrics.fidelity_missing()
        if missing:
            return missing
    return None


def settle(name: str, cfg: Config) -> dict:
    claim = CLAIMS[name]
    budget = claim.budgets[cfg.budget]
    out = Path(cfg.out) / name / cfg.budget
    why = unavailable(claim, cfg)
    if why:
        print(f"{name}: skipped ({why})", file=sys.stderr)
        return {"claim": name, "statement": claim.statement, "verdict": "not run", "why": why}
    sets = budget.set + ((f"data_dir={cfg.data_dir}",) if claim.needs == "cifar10" else ())
    gcfg = grid.Config(agent=claim.agent, env=claim.env, optimizers=(claim.treatment, claim.control), set=sets,
                       seeds=budget.seeds, total_timesteps=budget.steps, eval_interval=budget.eval_interval,
                       workers=cfg.workers or budget.workers, out=str(out), metric=claim.metric, device=cfg.device)
    # what runs first (the claim's own metric may be one this budget cannot measure: the DCGAN claim's
    # Inception Score on its 2D stand-in)
    measured = claim.metric or grid.AGENTS[claim.agent].metric_for(claim.env)
    print(f"{name}: measuring {measured} of {claim.agent} on {claim.env}, {claim.treatment} against {claim.control}, "
          f"{budget.seeds} seeds x {budget.steps:,} steps each ({cfg.budget} budget"
          f"{'; ' + budget.note if budget.note else ''}); the claim: {claim.statement}", file=sys.stderr, flush=True)
    outcome = grid.run(gcfg, f"python -m studies.claims {name} --budget {cfg.budget}")
    fields = grid.AGENTS[claim.agent].optimizer_fields
    names = [grid.Setting(dict(zip(fields, o.split("/")))).name for o in (claim.treatment, claim.control)]
    metric = claim.metric or grid.AGENTS[claim.agent].metric_for(claim.env)
    (t, steps), (c, _) = curves_of(outcome.results, names[0], metric), curves_of(outcome.results, names[1], metric)
    undefined = None
    if claim.gain == "sample_efficiency":
        n = min(t.shape[-1], c.shape[-1])
        estimate = stats.interval(sample_efficiency(steps[:n]), t[..., :n], c[..., :n])
    else:
        if claim.gain == "relative" and c[..., -1].min() <= 0:
            # a resample of the control's seeds can average 0 or less: "x% more" has no meaning there
            undefined = (f"a relative gain is undefined: a control run scored {c[..., -1].min():g}; "
                         "the interval below is of the difference")
        statistic = relative if claim.gain == "relative" and not undefined else difference
        estimate = stats.interval(statistic, t[..., -1], c[..., -1])
    said = verdict(estimate, claim.claimed)
    if undefined and said != "not supported":  # the direction is measured, a relative size is not
        said = "above zero, size undefined"
    kind = "difference" if undefined else claim.gain
    claimed = "a gain above zero" if claim.claimed is None else shown(claim.claimed, claim.gain)
    gain_text = (f"{shown(estimate.point, kind)} [95% interval {shown(estimate.low, kind)}, "
                 f"{shown(estimate.high, kind)}]")
    what = {"relative": "final score, treatment over control", "difference": "final score, treatment minus control",
            "sample_efficiency": "steps the control needs to reach the lower final mean, over the treatment's"}[kind]
    lines = [f"# Claim {name}: {said}", "", f"> {claim.statement} ({claim.source})", "",
             f"- Measured gain ({what}): **{gain_text}**; claimed: {claimed}."
             + (f" ({undefined}.)" if undefined else ""),
             f"- Budget `{cfg.budget}`: {budget.seeds} seeds x {budget.steps:,} steps per optimizer, evaluated every "
             f"{budget.eval_interval:,} steps" + (f"; {budget.note}" if budget.note else "") + ".",
             f"- Treatment `{names[0]}`, control `{names[1]}`; everything else at the {claim.agent} preset"
             + (f" with {', '.join(budget.set)}" if budget.set else "") + ".", "",
             outcome.table, ""]
    (out / "verdict.md").write_text("\n".join(lines) + "\n")
    result = {"claim": name, "statement": claim.statement, "verdict": said, "gain": estimate.point,
              "gain_low": estimate.low, "gain_high": estimate.high, "claimed": claim.claimed, "budget": cfg.budget,
              "seeds": budget.seeds, "steps": budget.steps, "report": str(out / "verdict.md")}
    (out / "verdict.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{name}: {said}: gain {gain_text}, claimed {claimed} ({cfg.budget} budget); {out / 'verdict.md'}")
    return result


@exits_cleanly
def main(args: list[str] | None = None) -> list[dict]:
    cfg = cli.parse(Config, args, prog="python -m studies.claims", description=__doc__.split("\n")[0])
    if cfg.workers is not None and cfg.workers < 1:
        fail(f"--workers must be at least 1 (got {cfg.workers})")
    names = list(CLAIMS) if cfg.name == "all" else [cfg.name]
    return [settle(n, cfg) for n in names]


if __name__ == "__main__":
    main()

"""Results on real tasks: each entry trains a real trainer on a task users run, at a budget someone
published, over seeds, and sets its learning curve beside the published figure in docs/results.md.

    python bench/results.py                          # the entries, what each costs here, which are done
    python bench/results.py run ppo-hopper           # run one entry (or several, or `all`), then the page
    python bench/results.py run all --suite gpu      # the papers' budgets, for a machine with a GPU
    python bench/results.py page                     # rewrite docs/results.md from docs/results/*.json
    python bench/results.py smoke --out /tmp/smoke   # a few thousand steps of one entry (what CI runs)
    python bench/results.py adopt sac-hopper optimizer=adam runs/sac-lr-hopper/runs/optimizer=adam,learning_rate=1e-3
                                                     # a study grid's runs of the entry's protocol, as its own

An entry is an (agent, env, preset, budget, seeds) run as a studies.grid (each seed its own process
of `python -m agents.<agent>` with the preset and nothing but the flags the entry names), so it
resumes: an entry stopped part way (Ctrl-C, a session that ends) continues from each run's last
checkpoint when its command is given again, and runs that finished are not run again. Its runs go to
runs/results/<entry>/ (git-ignored); what the page needs goes to docs/results/<entry>.json and
<entry>.png (small, committed): each run's evaluation curve (the trainer's evaluation with exploration
off, every eval interval and at the end), its training episodes' returns (binned), its wall time, and
the machine. The page gives per entry the final evaluation (mean over seeds and its 95% bootstrap
interval), the training-episode measure that CleanRL's tables report (the mean return of the training
episodes that ended in the last 10% of the budget; our reading of "average episodic return"), the
reference with its source, and a sentence on what differs.

The CPU suite fits a 2-core machine over a few sittings (about 13 hours in all; `python bench/results.py`
lists each entry's cost). The GPU suite (`run all --suite gpu`) is the papers' budgets: DQN, Rainbow
and PPO on Breakout for 10M steps and SAC (K-FAC and Adam) on HalfCheetah for 1M, 3 seeds each: about
24 hours per seed of all five runs on one GPU, 72 in all one run at a time (estimates from published
speeds until bench/gpu.sh has run on one), resumable like the rest.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.events import read_curve  # noqa: E402
from studies import stats  # noqa: E402

DOCS = ROOT / "docs"
RUNS = ROOT / "runs" / "results"
TRAIN_TAG = "charts/episodic_return"
EVAL_TAG = "eval/episodic_return"
CUT_TAG = "eval/episodes_cut"  # of an evaluation's episodes, how many its step budget ended
ADOPTED = "adopted_from.txt"
"""In a run folder that `adopt` copied into an entry's grid: the folder it was copied from."""
TRAIN_WINDOW = 0.1
"""The training-episode measure: episodes that ended in the last this fraction of the budget."""
BINS = 50
"""Training-episode returns are kept as this many bins over the budget (the page's dashed curve)."""


@dataclass
class Reference:
    """A published figure to set beside an entry."""

    value: float
    source: str
    """Who measured it and where it is printed (paper and table, or repository, file and tag)."""
    measure: str
    """What the figure is: `train` (training episodes near the end of the budget) or `eval` (evaluation
    with exploration off)."""
    spread: Optional[float] = None
    """Its +/- as published (what it is, e.g. std over seeds, is in `source`)."""
    step: Optional[int] = None
    """The budget the figure was read at, if not the entry's."""
    name: str = ""
    """Whose figure, in a word ("Tianshou"), where an entry has several references of one measure."""
    digits: int = 1
    """Decimals the figure is shown with (0 for one read off a published plot)."""


@dataclass
class Entry:
    name: str
    agent: str
    env: str
    budget: int
    seeds: int
    references: list[Reference]
    differs: str
    """What differs from the reference's setup (env version, evaluation protocol, budget)."""
    minutes: float
    """The whole entry's wall time, all seeds at its --workers: on this 2-core CPU for the CPU suite (as
    measured, or estimated from the trainer's speed before it ran); for the GPU suite one run's (one seed,
    one optimizer) on one GPU, estimated from published speeds."""
    optimizers: tuple[str, ...] = ()
    sets: tuple[str, ...] = ()
    eval_interval: Optional[int] = None
    workers: int = 1
    """The grid's --workers: runs at once, each with (cores / workers) threads. 2 with one seed gives the
    run one thread, so that two such entries run side by side on 2 cores (two commands)."""
    threshold: Optional[float] = None
    """Report the first step whose evaluation reaches this (Pong: 18, "solved")."""
    atari: Optional[tuple[float, float]] = None
    """(random, human) scores for human-normalized scores."""
    suite: str = "cpu"
    full_games: bool = False
    """Give as the final evaluation each run's final.pt played over full games by the trainer's --eval
    (its preset's episodes and epsilon, each game to the env's own end: Atari's 108k-frame cap), as the
    reference's protocol does: the in-training evaluation cuts each episode at total_timesteps /
    episodes steps so that it never outlasts the training, which at 100k steps is 10,000 steps."""
    earlier: tuple[tuple[str, ...], ...] = ()
    """Studies already committed that ran this entry's protocol: (their results.json, the setting[, the
    label the page gives it, where the setting alone no longer says what ran]), shown on the page, finals
    only, until the entry is run here and its curves drawn."""

    def grid_args(self, out: Path, budget: Optional[int] = None, seeds: Optional[int] = None) -> list[str]:
        args = ["--agent", self.agent, "--env", self.env, "--seeds", str(seeds or self.seeds),
                "--total-timesteps", str(budget or self.budget), "--workers", str(self.workers), "--out", str(out)]
        if self.optimizers:
            args += ["--optimizers", *self.optimizers]
        if self.eval_interval is not None:
            args += ["--eval-interval", str(self.eval_interval)]
        if self.sets:
            args += ["--set", *self.sets]  # one --set: a list flag typed twice is refused
        return args

    def command(self) -> str:
        return f"python bench/results.py run {self.name}"


# CleanRL's PPO on MuJoCo, 1M steps, v4 envs: docs/rl-algorithms/ppo.md, ppo_continuous_action.py,
# benchmark tag pr-424; mean +/- std over 3 seeds of the average episodic return of training episodes.
CLEANRL_PPO = "CleanRL ppo_continuous_action.py, 1M steps, v4 env, 3 seeds (docs/rl-algorithms/ppo.md, tag pr-424)"
# Atari random and human scores: DQN Zoo's atari_data.py (the Nature DQN paper's human and random).
# Data-efficient Rainbow at 100k agent steps: van Hasselt et al. 2019, "When to use parametric models in
# reinforcement learning?", its per-game scores at 100k interactions, as reprinted in the DER column of
# CURL's Atari-100k table (Laskin, Srinivas & Abbeel 2020); typed here from those tables.
DER = ("data-efficient Rainbow (DER), 100k steps: van Hasselt et al. 2019, per-game scores, as in the DER column "
       "of CURL's Atari-100k table (Laskin et al. 2020); random and human scores as in DQN Zoo's atari_data.py")
# Dopamine's SAC baselines (google/dopamine, baselines/mujoco/data/<env>.json, plotted by its
# plots.html as the mean over runs): 5 runs, each row the training return of one iteration of 1,000 steps
# (sac.gin: ContinuousRunner.training_steps = 1000), so iteration 100 is 100k steps; mean and std (numpy's,
# ddof 0) of its 5 values there.
DOPAMINE_SAC = ("Dopamine's SAC (JAX, sac.gin) on the v2 env: mean +/- std over its 5 runs of the training return "
                "at iteration 100 = 100k steps (runs {seeds}), google/dopamine baselines/mujoco/data/{env}.json")
# Tianshou's SAC benchmark (thu-ml/tianshou examples/mujoco/benchmark/<env>/sac/test_rew_10seeds.csv):
# every 5,000 steps the deterministic policy's mean return over 10 test episodes, per seed, with the
# mean and std ("rew", "rew:shaded") over its 10 seeds; read at the 100,000 row.
TIANSHOU_SAC = ("Tianshou's SAC (examples/mujoco/mujoco_sac.py) on {env}: mean +/- std over its 10 seeds of the "
                "deterministic evaluation (10 episodes) at 100k steps (seeds {seeds}), thu-ml/tianshou "
                "examples/mujoco/benchmark/{env}/sac/test_rew_10seeds.csv")
# PFRL's SAC reproduction (pfnet/pfrl examples/mujoco/reproduction/soft_actor_critic, its README's
# assets/<env>-v2.png): the mean over 10 seeds of the deterministic policy's return over 10 episodes, every
# 10k steps on Hopper and 50k on HalfCheetah, with a band of one standard deviation. Published as a figure
# only, so read off its pixels at 100k: the axes calibrated on the grid lines, the line's centre
# interpolated between the two pixel columns either side of 100k, the band's edges in the same column.
# Hopper's axis spans 1M steps (100k is 34 pixels in), HalfCheetah's 3M (11 pixels in, on the steep first
# rise): read to about +/- 100 and +/- 250.
PFRL_SAC = ("PFRL's SAC reproduction on {env}: the mean over its 10 seeds of the deterministic evaluation "
            "(10 episodes) +/- the std band, read off the curve at 100k steps (pfnet/pfrl "
            "examples/mujoco/reproduction/soft_actor_critic/assets/{env}.png; a figure only, so to about "
            "+/- {precision})")


def sac_references(task: str, dopamine: tuple, tianshou: tuple, pfrl: tuple) -> list[Reference]:
    """The published SAC figures at 100k steps on one MuJoCo task: Dopamine's and Tianshou's as (mean, std,
    the range of its runs), PFRL's as (mean, band, the precision it was read to)."""
    return [Reference(dopamine[0], DOPAMINE_SAC.format(env=task.lower(), seeds=dopamine[2]), "train", dopamine[1],
                      name="Dopamine"),
            Reference(tianshou[0], TIANSHOU_SAC.format(env=f"{task}-v3", seeds=tianshou[2]), "eval", tianshou[1],
                      name="Tianshou"),
            Reference(pfrl[0], PFRL_SAC.format(env=f"{task}-v2", precision=pfrl[2]), "eval", pfrl[1], name="PFRL",
                      digits=0)]


SAC_REFERENCES_DIFFER = (
    "The references' settings differ from ours (alpha tuned towards -|A| from 1 and 5,000 random "
    "steps, as CleanRL's script; learning rate 1e-3 with either optimizer, as Tianshou's): Dopamine "
    "scales rewards by 0.1, tunes alpha towards -|A|/2 and starts learning after 10,000 random steps, "
    "and its figure is the return of training episodes with sampled actions; Tianshou's alpha is fixed "
    "at 0.2, 10,000 random steps, and its figure a deterministic evaluation as ours; PFRL runs "
    "Haarnoja et al.'s rate 3e-4 after 10,000 random steps, its figure a deterministic evaluation as ours. "
    "The studies' rows named lr 3e-4 ran Haarnoja et al.'s rate, the default until it was measured against 1e-3 "
    "(studies/results/sac-lr-*-100k, sac-kfac-lr-*-100k). Every K-FAC row but eigen-adam's ran graft, the "
    "combination that was the default until 2026-12-07 (eigen-adam since): their commands rerun them with "
    "kfac_combine=graft added to the setting (kfac,kfac_combine=graft,learning_rate=1e-3).")
PONG_REFERENCE = Reference(20.36, "CleanRL ppo_atari.py on PongNoFrameskip-v4, 10M steps, 3 seeds "
                                  "(docs/rl-algorithms/ppo.md)", "train", 0.20, step=10_000_000)
# save_replay: a run stopped in one sitting resumes in the next with its replay memory and priorities
ATARI100K = ("preset=atari100k", "sticky_actions=0", "save_replay=true")
ATARI100K_NOTE = ("Ours: ALE v5 with sticky actions off (`--sticky-actions 0`, the Atari-100k protocol; the "
                  "trainer's default is 0.25), the evaluation of the final weights over 10 episodes with the "
                  "noise off and epsilon 0.001, full games up to 108k frames (`--eval` of final.pt; the "
                  "curve's in-training evaluations cut each game at 10,000 agent steps); DER's: the mean "
                  "over its seeds of its evaluation at 100k agent steps (400k frames).")
KL_NOTE = ("As {entry}, each transition prioritized by the KL divergence to its projected target (`--priority "
           "kl`, the Rainbow paper's words) where the trainer's default and the reference code (Kaixhin's, "
           "Dopamine's) take the cross-entropy, the KL plus the target's entropy. Run by the version before "
           "`--priority`, whose one priority this was.")

ENTRIES = [
    Entry("ppo-hopper", "ppo", "Hopper-v5", 1_000_000, 3,
          [Reference(2382.9, CLEANRL_PPO, "train", 271.7)],
          "Hopper-v5 against v4 (Gymnasium's v5 revision of the same robot and task: bug fixes and new arguments). "
          "Same preset (Baselines' MuJoCo PPO).", minutes=25, workers=2),
    Entry("ppo-halfcheetah", "ppo", "HalfCheetah-v5", 1_000_000, 3,
          [Reference(1442.6, CLEANRL_PPO, "train", 46.0)],
          "HalfCheetah-v5 against v4. Same preset (Baselines' MuJoCo PPO).", minutes=25, workers=2),
    Entry("ppo-walker2d", "ppo", "Walker2d-v5", 1_000_000, 3,
          [Reference(2288.0, CLEANRL_PPO, "train", 571.8)],
          "Walker2d-v5 against v4. Same preset (Baselines' MuJoCo PPO).", minutes=25, workers=2),
    Entry("sac-halfcheetah", "sac", "HalfCheetah-v5", 100_000, 3,
          sac_references("HalfCheetah", (5469.7, 490.2, "4,589 to 6,007"), (6514.6, 514.2, "5,629 to 7,289"),
                         (5540, 350, 250)),
          "The default optimizer (K-FAC on the critics, Adam in its eigenbasis) and Adam, the "
          "K-FAC study's protocol: evaluation of 5 deterministic episodes every 10k steps. v5 against v2. "
          + SAC_REFERENCES_DIFFER,
          minutes=120, optimizers=("kfac", "adam"), eval_interval=10_000, workers=2,
          sets=("eval_episodes=5", "save_replay=true"),
          earlier=(("studies/results/kfac-critics-only-halfcheetah-100k/results.json", "optimizer=kfac",
                    "optimizer=kfac, lr 3e-4"),
                   ("studies/results/kfac-critics-only-halfcheetah-100k/adam-results.json", "optimizer=adam",
                    "optimizer=adam, lr 3e-4"),
                   ("studies/results/sac-kfac-lr-halfcheetah-100k/results.json", "optimizer=kfac,learning_rate=1e-3",
                    "optimizer=kfac, graft, lr 1e-3"))),
    Entry("sac-hopper", "sac", "Hopper-v5", 100_000, 3,
          sac_references("Hopper", (2337.2, 928.4, "1,189 to 3,165"), (2613.5, 990.8, "420 to 3,430"),
                         (1340, 790, 100)),
          "Protocol as sac-halfcheetah. v5 against v2. " + SAC_REFERENCES_DIFFER,
          minutes=110, optimizers=("kfac", "adam"), eval_interval=10_000, workers=2,
          sets=("eval_episodes=5", "save_replay=true"),
          earlier=(("studies/results/kfac-critics-only-hopper-100k/results.json", "optimizer=kfac",
                    "optimizer=kfac, lr 3e-4"),
                   ("studies/results/claim-sac-hopper-100k/results.json", "optimizer=adam", "optimizer=adam, lr 3e-4"),
                   ("studies/results/sac-lr-hopper-100k/results.json", "optimizer=adam,q_lr=1e-3",
                    "optimizer=adam, CleanRL's rates: critics and alpha 1e-3, actor 3e-4"),
                   ("studies/results/sac-kfac-lr-hopper-100k/results.json", "optimizer=kfac,learning_rate=1e-3",
                    "optimizer=kfac, graft, lr 1e-3"),
                   ("studies/results/sac-eigen-adam-hopper-100k/results.json",
                    "optimizer=kfac,kfac_combine=eigen-adam",
                    "optimizer=kfac, eigen-adam, lr 1e-3, 5 seeds"))),
    Entry("ppo-pong", "ppo", "Pong", 3_000_000, 1, [PONG_REFERENCE],
          "3M steps against CleanRL's 10M (the page gives the step where our evaluation first reaches 18); "
          "ALE v5 Pong with the preprocessing of CleanRL's NoFrameskip-v4 wrappers and, as NoFrameskip-v4, no "
          "sticky actions (`--sticky-actions 0`; the trainer's default is v5's 0.25: ppo-pong-sticky below).",
          minutes=145, eval_interval=250_000, sets=("sticky_actions=0",), threshold=18.0),
    Entry("ppo-pong-sticky", "ppo", "Pong", 3_000_000, 1, [PONG_REFERENCE],
          "The trainer's default env: ALE v5 Pong with sticky actions (repeat probability 0.25, Machado et al. "
          "2018, v5's own default), which NoFrameskip-v4 does not have, and otherwise as ppo-pong: the same "
          "budget on a harder env.",
          minutes=145, eval_interval=250_000, threshold=18.0),  # measured: 2.4 h alone at 2 threads
    Entry("rainbow-100k-roadrunner", "rainbow", "RoadRunner", 100_000, 3,
          [Reference(9600.0, DER, "eval")], ATARI100K_NOTE, minutes=150, sets=ATARI100K, workers=2, full_games=True,
          atari=(11.5, 7845.0)),
    Entry("rainbow-100k-kungfumaster", "rainbow", "KungFuMaster", 100_000, 3,
          [Reference(14346.1, DER, "eval")],
          ATARI100K_NOTE + " DER's public reference code run on this machine, side by side (Kaixhin/Rainbow at "
          "commit 1745b18, unmodified, with its README's data-efficient arguments; atari_py replaced by a shim "
          "over ale-py 0.12.1's ALEInterface, the same emulator; 2026-12-07, two seeds, one thread each): final "
          "evaluations 4,630 and 4,440 (10 full games each, epsilon 0.001, noise off), as far below DER's table "
          "as ours: the gap is not between our agent and that code.",
          minutes=150, sets=ATARI100K, workers=2, full_games=True, atari=(258.5, 22736.3)),
    Entry("rainbow-100k-kangaroo", "rainbow", "Kangaroo", 100_000, 3,
          [Reference(779.3, DER, "eval")], ATARI100K_NOTE, minutes=150, sets=ATARI100K, workers=2, full_games=True,
          atari=(52.0, 3035.0)),
    # The same three games with the priorities by the KL (the paper's words), the trainer's only priority
    # until 2026-12-07: kept as the comparison that found the cross-entropy (the reference code's) better.
    *(Entry(f"rainbow-100k-{game.lower()}-kl", "rainbow", game, 100_000, seeds, [Reference(der, DER, "eval")],
            KL_NOTE.format(entry=f"rainbow-100k-{game.lower()}"), minutes=minutes, sets=(*ATARI100K, "priority=kl"),
            workers=2, full_games=True, atari=atari)
      for game, seeds, der, minutes, atari in (("KungFuMaster", 3, 14346.1, 150, (258.5, 22736.3)),
                                               ("RoadRunner", 1, 9600.0, 75, (11.5, 7845.0)),
                                               ("Kangaroo", 1, 779.3, 75, (52.0, 3035.0)))),
    # The papers' budgets, for a GPU. Minutes per seed are estimates, not measured here: PPO and SAC from
    # LeanRL's H100 figures for CleanRL's scripts (PPO Atari ~1,000 steps/s, SAC ~130); DQN at ~400
    # steps/s and Rainbow at ~280 (its update costs about 1.5x DQN's), guesses until bench/gpu.sh runs.
    Entry("gpu-dqn-breakout", "dqn", "Breakout", 10_000_000, 3,
          [Reference(366.928, "CleanRL dqn_atari.py on BreakoutNoFrameskip-v4, 10M steps, 3 seeds "
                              "(docs/rl-algorithms/dqn.md)", "train", 39.89)],
          "ALE v5 Breakout with CleanRL's preprocessing.", minutes=420, suite="gpu"),
    Entry("gpu-rainbow-breakout", "rainbow", "Breakout", 10_000_000, 3, [],
          "Rainbow's published Breakout figures are at 50M steps (200M frames); none at 10M was read.",
          minutes=600, suite="gpu"),
    Entry("gpu-ppo-breakout", "ppo", "Breakout", 10_000_000, 3,
          [Reference(414.66, "CleanRL ppo_atari.py on BreakoutNoFrameskip-v4, 10M steps, 3 seeds "
                             "(docs/rl-algorithms/ppo.md)", "train", 28.09)],
          "ALE v5 Breakout with CleanRL's preprocessing.", minutes=170, suite="gpu"),
    Entry("gpu-sac-halfcheetah", "sac", "HalfCheetah-v5", 1_000_000, 3,
          [Reference(9634.89, "CleanRL sac_continuous_action.py on HalfCheetah-v2, 1M steps "
                              "(docs/rl-algorithms/sac.md)", "train", 1423.73)],
          "v5 against v2; the default optimizer (K-FAC on the critics) and Adam.",
          minutes=130, optimizers=("kfac", "adam"), suite="gpu"),
]
BY_NAME = {e.name: e for e in ENTRIES}


# ------------------------------------------------------------------------------------------------
# Running an entry and keeping what the page needs
# ------------------------------------------------------------------------------------------------


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "torch": torch.__version__,
            "python": platform.python_version()}


def binned(curve, budget: int) -> dict:
    """Training-episode returns as the mean of each of BINS equal spans of the budget (empty spans left out)."""
    edges = np.linspace(0, budget, BINS + 1)
    which = np.clip(np.digitize(curve.steps, edges) - 1, 0, BINS - 1)
    steps, values = [], []
    for b in range(BINS):
        sel = which == b
        if sel.any():
            steps.append(int((edges[b] + edges[b + 1]) / 2))
            values.append(float(curve.values[sel].mean()))
    return {"steps": steps, "values": values}


def train_last(curve, budget: int) -> tuple[Optional[float], int]:
    """CleanRL's measure: the mean return of the training episodes that ended in the last
    TRAIN_WINDOW of the budget (None when none did), and how many those are."""
    late = curve.steps >= budget * (1 - TRAIN_WINDOW)
    return (float(curve.values[late].mean()) if late.any() else None), int(late.sum())


def full_game_scores(entry: Entry, folder: Path) -> list[float]:
    """The scores of the run's final.pt over full games (`python -m agents.<agent> --eval`), kept in the
    run folder (full_games.json) and played again only when final.pt is newer."""
    kept, final = folder / "full_games.json", folder / "final.pt"
    if not final.is_file():
        sys.exit(f"error: {entry.name}: no final.pt in {folder} to play over full games (did its run fail?)")
    if kept.exists() and kept.stat().st_mtime >= final.stat().st_mtime:
        return json.loads(kept.read_text())["scores"]
    import importlib

    import torch

    from common import lifecycle

    print(f"results: {entry.name}: full games of {os.path.relpath(final, ROOT)}", file=sys.stderr, flush=True)
    trainer = importlib.import_module(f"agents.{entry.agent}").TRAINER
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // entry.workers))  # as the grid's runs
    try:
        scores = [float(v) for v in lifecycle.main(trainer, ["--eval", str(final)])]
    finally:  # the caller's own count again (a test process beside another would compete for cores)
        torch.set_num_threads(before)
    kept.write_text(json.dumps({"scores": scores}) + "\n")
    return scores


def run_record(folder: Path, seed: int, budget: int, resumed: bool, full: Optional[list[float]] = None,
               refilled: bool = False) -> dict:
    """What the page needs of one run; `full`: its final.pt's scores over full games, then its final
    evaluation (the in-training one's last point kept as final_eval_in_training)."""
    ev, _ = read_curve(folder, EVAL_TAG)
    tr, _ = read_curve(folder, TRAIN_TAG)
    rec = {"seed": seed, "folder": str(folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder),
           "resumed": resumed, "refilled": refilled,
           "eval": {"steps": ev.steps.tolist(), "values": ev.values.tolist()},
           "final_eval": float(ev.values[-1]),
           # from the run's first event to its final evaluation; a pause between sittings counts too
           "wall_s": float(ev.wall_times[-1] - ev.start_time),
           "start": float(ev.start_time), "end": float(ev.wall_times[-1])}
    if (folder / ADOPTED).exists():
        rec["adopted_from"] = (folder / ADOPTED).read_text().strip()
    cut, _ = read_curve(folder, CUT_TAG)  # written by trainers since 2026-12-06
    if cut is not None:
        rec["final_eval_cut"] = int(cut.values[-1])
    if full is not None:
        rec["final_eval_in_training"] = rec["final_eval"]
        rec["final_eval"], rec["full_games"] = float(np.mean(full)), full
    if tr is not None:
        rec["train"] = binned(tr, budget)
        rec["train_last"], rec["train_episodes_last"] = train_last(tr, budget)
    return rec


def run_entry(entry: Entry, out: Path, data_dir: Path, budget: Optional[int] = None,
              seeds: Optional[int] = None, workers: Optional[int] = None) -> dict:
    """Run (or resume) the entry's grid and write data_dir/<entry>.json; returns what it wrote."""
    from studies import grid

    entry = replace(entry, workers=workers) if workers else entry
    args = entry.grid_args(out, budget, seeds)
    print(f"results: {entry.name}: python -m studies.grid {' '.join(args)}", file=sys.stderr, flush=True)
    start = datetime.datetime.now(datetime.timezone.utc)
    outcome = grid.main(args)
    settings = []
    for r in outcome.results:
        runs = [run_record(f, s, budget or entry.budget, resumed,
                           full_game_scores(entry, f) if entry.full_games else None, refilled)
                for s, f, resumed, refilled in zip(r.seeds, r.folders, r.resumed, r.refilled)]
        settings.append({"label": r.setting.name, "runs": runs})
    shown = [os.path.relpath(a, ROOT) if a == str(out) and out.is_relative_to(ROOT) else a for a in args]
    data = {"entry": asdict(entry), "budget": budget or entry.budget, "command": entry.command(),
            "grid": "python -m studies.grid " + " ".join(shown), "machine": machine(),
            "finished": start.strftime("%Y-%m-%d"), "settings": settings}
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / f"{entry.name}.json").write_text(json.dumps(data, indent=1) + "\n")
    plot_entry(data, data_dir / f"{entry.name}.png")
    return data


def adopt(entry: Entry, setting: str, source: Path, out: Path) -> list[Path]:
    """Take a study grid's runs as the entry's own where the study ran the entry's protocol (the SAC
    entries are the K-FAC study's 100k runs): the finished runs of seeds 1 to entry.seeds in `source` (a
    grid's runs/<setting>/ folder) are copied into the entry's grid under `setting`, each with ADOPTED
    naming where it came from, once every one has passed the check the grid makes of a run it finds: its
    config equal to what the entry's grid asks for `setting` in every field two invocations may not differ
    in, and a final.pt at the entry's budget no older than the run's last checkpoint. `run` then takes them
    as done. Nothing is copied when one
    fails; seeds the entry already holds are left as they are. Returns the folders made."""
    from common import cli
    from common.errors import UserError
    from studies import grid

    try:
        p = grid.plan_grid(cli.parse(grid.Config, entry.grid_args(out), prog="python -m studies.grid"),
                           "python bench/results.py adopt")
    except UserError as e:
        sys.exit(f"error: {e}")
    plans = [plan for plan in p["plans"] if plan.setting.name == setting]
    if not plans:
        names = ", ".join(sorted({plan.setting.name for plan in p["plans"]}))
        sys.exit(f"error: entry {entry.name} has no setting {setting!r}; its settings: {names}")
    if not source.is_dir():
        sys.exit(f"error: {source} is not a folder")
    algo, budget_field = p["trainer"].kind, p["trainer"].budget
    copies = []
    for plan in plans:
        if plan.status == "done":
            continue
        finished = sorted((f for f in source.glob(f"*__{algo}__{plan.seed}__*") if grid.finished(f)),
                          key=lambda f: (f / "final.pt").stat().st_mtime)
        if not finished:
            sys.exit(f"error: {source} holds no finished {algo} run of seed {plan.seed}")
        folder = finished[-1]
        config = json.loads((folder / "config.json").read_text())
        if config.get(budget_field) != plan.budget:
            sys.exit(f"error: {folder} trained to {budget_field}={config.get(budget_field)!r}, entry {entry.name} "
                     f"to {plan.budget}")
        if (d := grid.differs(config, plan, p["trainer"])) is not None:
            sys.exit(f"error: {folder} was trained with {d[0]}={d[1]!r}, entry {entry.name} asks for {d[2]!r} "
                     f"with {setting}: not the entry's protocol")
        copies.append((folder, plan.logdir / folder.name))
    out.mkdir(parents=True, exist_ok=True)
    try:
        with grid.locked(out):  # not while the entry's grid runs there
            for src, dst in copies:
                shutil.copytree(src, dst)
                shown = os.path.relpath(src.resolve(), ROOT) if src.resolve().is_relative_to(ROOT) else str(src)
                (dst / ADOPTED).write_text(shown + "\n")
    except UserError as e:
        sys.exit(f"error: {e}")
    return [dst for _, dst in copies]


# ------------------------------------------------------------------------------------------------
# Figures and the page
# ------------------------------------------------------------------------------------------------


def interval_of(values: list[float]) -> Optional[dict]:
    if not values:
        return None
    if len(values) == 1:
        return {"point": values[0], "low": None, "high": None}
    return asdict(stats.interval(stats.mean, np.array(values)))


def plot_entry(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entry = data["entry"]
    fig, ax = plt.subplots(figsize=(5.2, 3.3), dpi=80)
    for i, s in enumerate(data["settings"]):
        color = f"C{i}"
        runs = [r for r in s["runs"] if r["eval"]["steps"]]
        if not runs:
            continue
        grid_steps = np.array(runs[0]["eval"]["steps"], dtype=float)
        ys = np.array([np.interp(grid_steps, r["eval"]["steps"], r["eval"]["values"]) for r in runs])
        label = f"{entry['agent']} {s['label']}" if s["label"] != "default" else entry["agent"]
        ax.plot(grid_steps, ys.mean(0), color=color, marker="o", markersize=2.5, label=f"{label}: evaluation")
        if len(runs) > 1:
            band = [stats.interval(stats.mean, ys[:, j]) for j in range(ys.shape[1])]
            ax.fill_between(grid_steps, [b.low for b in band], [b.high for b in band], color=color, alpha=0.2,
                            linewidth=0)
        full = [r["final_eval"] for r in runs if "full_games" in r]
        if full:
            ax.plot([data["budget"]], [np.mean(full)], color=color, marker="*", markersize=7, linestyle="none",
                    label=f"{label}: final.pt, full games")
        trains = [r["train"] for r in runs if r.get("train") and r["train"]["steps"]]
        if trains:
            tsteps = np.array(trains[0]["steps"], dtype=float)
            tys = np.mean([np.interp(tsteps, t["steps"], t["values"]) for t in trains], axis=0)
            ax.plot(tsteps, tys, color=color, linestyle=":", linewidth=1, label=f"{label}: training episodes")
    for ref in entry["references"]:
        at = ref["step"] or data["budget"]
        if at <= data["budget"]:
            ax.axhline(ref["value"], color="k", linestyle="--", linewidth=0.8)
        what = {"train": "training episodes", "eval": "evaluation"}[ref["measure"]]
        ax.annotate(f"reference {ref['value']:,.0f} ({what}" + (f", at {at:,} steps" if at != data["budget"] else "")
                    + ")",
                    xy=(0.01, 0.97), xycoords="axes fraction", va="top", fontsize=7)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episodic return")
    ax.set_title(f"{entry['agent']} on {entry['env']}, {len(data['settings'][0]['runs'])} seed(s)", fontsize=9)
    ax.legend(fontsize=6, loc="lower right")
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def fmt(x: Optional[float], digits: int = 0) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def fmt_interval(e: Optional[dict]) -> str:
    if e is None:
        return "-"
    if e["low"] is None:
        return fmt(e["point"], 1)
    return f"{fmt(e['point'], 1)} [{fmt(e['low'])}, {fmt(e['high'])}]"


def first_reach(run: dict, threshold: float) -> Optional[int]:
    for step, value in zip(run["eval"]["steps"], run["eval"]["values"]):
        if value >= threshold:
            return step
    return None


def entry_hours(data: dict) -> float:
    """The entry's wall time: the time some run of it was running, from each run's start to its end (runs
    side by side counted once; a gap between runs, as between the studies an entry adopted, not at all)."""
    hours, reach = 0.0, None
    for start, end in sorted((r["start"], r["end"]) for s in data["settings"] for r in s["runs"]):
        if reach is None or start > reach:
            hours, reach = hours + (end - start), end
        elif end > reach:
            hours, reach = hours + (end - reach), end
    return hours / 3600


def setting_rows(data: dict) -> list[dict]:
    entry = data["entry"]
    rows = []
    for s in data["settings"]:
        runs = s["runs"]
        finals = [r["final_eval"] for r in runs]
        trains = [r["train_last"] for r in runs if r.get("train_last") is not None]
        row = {"label": s["label"], "seeds": len(runs), "budget": data["budget"], "final": interval_of(finals),
               "train": interval_of(trains),
               "hours": entry_hours(data)}
        if entry.get("atari"):
            rnd, human = entry["atari"]
            row["hns"] = float(np.mean([(f - rnd) / (human - rnd) for f in finals]))
        if entry.get("threshold") is not None:
            row["reached"] = [first_reach(r, entry["threshold"]) for r in runs]
        rows.append(row)
    return rows


def against(row: dict, ref: dict) -> str:
    """Ours beside a reference of the same measure: level with it when our mean lies within its published
    spread, else above or below by how much, and whether the reference lies inside our interval (with 3
    seeds the bootstrap interval is the range of the seeds: inside it is no real difference shown);
    empty for a measure we do not have or a reference at another budget."""
    ours = row["train"] if ref["measure"] == "train" else row["final"] if ref["measure"] == "eval" else None
    if ours is None or (ref.get("step") and ref["step"] != row.get("budget")):
        return ""
    point, what = ours["point"], {"train": "training episodes", "eval": "final evaluation"}[ref["measure"]]
    inside = ours["low"] is not None and ours["low"] <= ref["value"] <= ours["high"]
    who = f"{ref['name']}'s" if ref.get("name") else "the reference"
    if ref.get("spread") is not None and abs(point - ref["value"]) <= ref["spread"]:
        return f"{what} level with {who} (our mean within its published spread)"
    how = (f"{point / ref['value']:.0%} of it" if ref["value"] > 0
           else f"{point - ref['value']:+,.1f}")  # a ratio to a score <= 0 means nothing
    where = ("; the reference lies inside our interval, so no clear difference" if inside
             else "" if ours["low"] is None else "; outside our interval")
    return f"{what} {'above' if point > ref['value'] else 'below'} {who} ({how}{where})"


def beside_training_return(row: dict, entry: Entry) -> str:
    """An earlier study's final evaluation set beside a training-return reference, said as what it is:
    the study kept no training episodes, so the measures differ."""
    refs = [r for r in entry.references if r.measure == "train" and r.value > 0 and not r.step]
    return "".join(f"; {row['final_mean']['point'] / r.value:.0%} of {r.name or 'the reference'}'s training return "
                   f"(the study kept no training-episode figure: a final evaluation beside training episodes, "
                   f"not the same measure)" for r in refs)


def reference_cell(entry: dict) -> str:
    cells = []
    for ref in entry["references"]:
        digits = ref.get("digits", 1)
        v = (f"{ref['name']} " if ref.get("name") else "") + f"{ref['value']:,.{digits}f}"
        v += f" +/- {ref['spread']:,.{digits}f}" if ref.get("spread") is not None else ""
        v += f" ({ref['measure']}" + (f", at {ref['step']:,}" if ref.get("step") else "") + ")"
        if entry.get("atari"):
            rnd, human = entry["atari"]
            v += f", HNS {(ref['value'] - rnd) / (human - rnd):.2f}"
        cells.append(v)
    return "; ".join(cells) or "none read"


def earlier_rows(entry: Entry) -> list[tuple[str, str, dict]]:
    """The rows of the committed studies an entry names, each with its study's command."""
    found = []
    for path, setting, *label in entry.earlier:
        study = json.loads((ROOT / path).read_text())
        for row in study["rows"]:
            if row["setting"] == setting:
                found.append((path, label[0] if label else setting, {**row, "command": study["command"]}))
    return found


def adopted_said(data: dict) -> str:
    """Where an entry's runs came from when `adopt` took them from study grids, per setting."""
    said = []
    for s in data["settings"]:
        origins = sorted({str(Path(r["adopted_from"]).parent) for r in s["runs"] if r.get("adopted_from")})
        if origins:
            said.append(f"{s['label']} from {', '.join(f'`{o}`' for o in origins)}")
    if not said:
        return ""
    return (" Its runs are a study's that ran this protocol, taken by `python bench/results.py adopt` (which "
            "checked each run's config against the entry's grid): " + "; ".join(said) + ".")


def earlier_lines(entry: Entry, page: Path) -> list[str]:
    """The committed studies' rows an entry names, each with its curves, command and verdicts."""
    lines = []
    for path, setting, row in earlier_rows(entry):
        curves = os.path.relpath(ROOT / path.replace("results.json", "curves.png"), page.parent)
        lines += ["", f"Measured earlier with this protocol by a committed study ([curves]({curves})): "
                      f"{setting}, final evaluation {fmt_interval(row['final_mean'])} over {row['seeds']} "
                      f"seeds (`{row['command']}`)" + beside_training_return(row, entry)
                      + "".join(f"; {v}" for v in (against({"final": row["final_mean"], "train": None},
                                                            asdict(ref)) for ref in entry.references) if v)
                      + "."]
    return lines


def write_page(data_dir: Path, page: Path) -> None:
    """docs/results.md from every <entry>.json in data_dir, with the entries not yet run listed with their commands."""
    found = {}
    for path in sorted(data_dir.glob("*.json")):
        data = json.loads(path.read_text())
        if data["entry"]["name"] in BY_NAME:  # references and notes as this file states them now
            data["entry"] = asdict(BY_NAME[data["entry"]["name"]])
        found[data["entry"]["name"]] = data
    rel = os.path.relpath(data_dir, page.parent)
    lines = ["# Results on real tasks", "",
             "Each entry is the real trainer with its preset, run over seeds by `bench/results.py` "
             "(a resumable `studies.grid`), set beside a published figure. *Final evaluation*: the "
             "trainer's evaluation of the final weights with exploration off, mean over seeds [95% "
             "bootstrap interval]. *Training episodes*: the mean return of the training episodes that ended "
             f"in the last {TRAIN_WINDOW:.0%} of the budget, the measure CleanRL's tables report. Below a "
             "reference is written as measured; what differs is said per entry. Regenerate this page with "
             "`python bench/results.py page`; run an entry with the command in its section.", "",
             "| entry | budget | seeds | final evaluation | training episodes | reference | wall time |",
             "|---|---:|---:|---:|---:|---|---:|"]
    for entry in ENTRIES:
        data = found.get(entry.name)
        if data is None:
            for path, setting, row in earlier_rows(entry):
                lines.append(f"| [{entry.name} ({setting})](#{entry.name}) | {entry.budget:,} | {row['seeds']} | "
                             f"{fmt_interval(row['final_mean'])} | - | {reference_cell(asdict(entry))} | "
                             f"[study]({os.path.relpath(ROOT / path, page.parent)}) |")
            continue
        for row in setting_rows(data):
            name = entry.name + ("" if row["label"] == "default" else f" ({row['label']})")
            lines.append(f"| [{name}](#{entry.name}) | {data['budget']:,} | {row['seeds']} | "
                         f"{fmt_interval(row['final'])} | {fmt_interval(row['train'])} | "
                         f"{reference_cell(data['entry'])} | {row['hours']:.1f} h |")
    lines.append("")
    lines.append("Wall time: the whole entry's, the time some run of it was running, each from its start to its "
                 "final evaluation (runs two at a time, one thread each, where the entry's grid has `--workers 2`; "
                 "a run resumed in a later sitting counts the pause between).")
    for entry in ENTRIES:
        data = found.get(entry.name)
        lines += ["", f"## {entry.name}", ""]
        if data is None:
            where = " on a 2-core CPU" if entry.suite == "cpu" else " per seed on a GPU (an estimate)"
            lines += [f"Not run yet ({entry.suite} suite, about {entry.minutes:.0f} min{where}): "
                      f"`{entry.command()}`.", "", f"Reference: {reference_cell(asdict(entry))}. "
                      + "; ".join(r.source for r in entry.references), "", entry.differs]
            lines += earlier_lines(entry, page)
            continue
        m = data["machine"]
        lines += [f"`{data['command']}` ({data['grid']}), finished {data['finished']} on {m['cpu']} "
                  f"({m['cores']} cores{', ' + m['gpu'] if m.get('gpu') else ''}), torch {m['torch']}."
                  + adopted_said(data), "", f"![{entry.name}]({rel}/{entry.name}.png)", ""]
        for row in setting_rows(data):
            label = "" if row["label"] == "default" else f"{row['label']}: "
            runs = [r for s in data["settings"] if s["label"] == row["label"] for r in s["runs"]]
            per_seed = ", ".join(f"{r['final_eval']:,.1f}" for r in runs)
            said = (f"- {label}final evaluation {fmt_interval(row['final'])} (per seed: {per_seed}), training "
                    f"episodes {fmt_interval(row['train'])}")
            if "hns" in row:
                said += f", human-normalized {row['hns']:.2f}"
            if "reached" in row:
                hit = [r for r in row["reached"] if r is not None]
                said += (f"; evaluation first >= {entry.threshold:g} at " + ", ".join(f"{r:,}" for r in hit)
                         + f" ({len(hit)} of {len(row['reached'])} seeds)" if hit else
                         f"; no evaluation reached {entry.threshold:g} (0 of {len(row['reached'])} seeds)")
            if entry.full_games and all("full_games" in r for r in runs):
                said += ("; the final evaluation is full games of final.pt (--eval), the in-training evaluation's "
                         "last point " + ", ".join(f"{r['final_eval_in_training']:,.1f}" for r in runs))
            cut = sum(r.get("final_eval_cut", 0) for r in runs if "full_games" not in r)
            if cut:
                said += f"; {cut} final-evaluation episodes ended by the evaluation's step budget, scored as they stood"
            refilled = [str(r["seed"]) for r in runs if r.get("refilled")]
            if refilled:
                said += (f"; seed{'s' if len(refilled) > 1 else ''} {', '.join(refilled)} resumed with the replay "
                         "memory refilled (run without --save-replay): not what an uninterrupted run learns")
            verdicts = [v for v in (against(row, ref) for ref in data["entry"]["references"]) if v]
            lines.append(said + "".join(f"; {v}" for v in verdicts) + ".")
        lines += ["", "Reference: " + (reference_cell(data["entry"]) + ". "
                                       + "; ".join(r["source"] for r in data["entry"]["references"])
                                       if data["entry"]["references"] else "none read."),
                  "", data["entry"]["differs"]]
        lines += earlier_lines(entry, page)
    page.write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------------------


def listing() -> None:
    for entry in ENTRIES:
        data = DOCS / "results" / f"{entry.name}.json"
        done = "-"
        if data.exists():  # seeds run so far: the fewest over the entry's settings
            ran = min(len(s["runs"]) for s in json.loads(data.read_text())["settings"])
            done = "done" if ran >= entry.seeds else f"{ran} of {entry.seeds} seeds"
        if entry.suite == "gpu":  # minutes per run: per seed, every setting's run
            cost = f"~{entry.minutes * max(1, len(entry.optimizers)):.0f} min per seed (estimate)"
        else:
            cost = f"~{entry.minutes:.0f} min"
        print(f"{entry.name:28s} {entry.suite:3s} {entry.agent:8s} {entry.env:16s} {entry.budget:>11,} steps x "
              f"{entry.seeds} seeds, {cost}  {done}")
    print("\nrun: python bench/results.py run NAME [NAME ...] | run all [--suite gpu]; "
          "the page alone: python bench/results.py page")


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments as one line on stderr (argparse adds its usage block), exit 2; its subcommands alike."""

    def error(self, message: str):
        self.exit(2, f"error: {message}; see {self.prog} --help\n")


def main(argv: Optional[list[str]] = None) -> None:
    parser = OneLineParser(prog="python bench/results.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what")
    run = sub.add_parser("run", help="run entries (resumably), then rewrite the page")
    run.add_argument("names", nargs="+", help="entry names, or `all` (of --suite)")
    run.add_argument("--suite", choices=("cpu", "gpu"), default="cpu")
    run.add_argument("--seeds", type=int, default=None, help="only the entry's first N seeds for now (a later "
                     "run without --seeds adds the rest: the grid resumes)")
    run.add_argument("--workers", type=int, default=None, help="runs at once, each with (cores / workers) threads "
                     "(default: the entry's; 1 gives one run all the cores, e.g. with --seeds 1 and nothing beside it)")
    sub.add_parser("page", help="rewrite docs/results.md from docs/results/*.json")
    take = sub.add_parser("adopt", help="take a study grid's runs of an entry's protocol as the entry's own "
                          "(their configs checked against the entry's), then `run` finds them done")
    take.add_argument("name", help="the entry")
    take.add_argument("setting", help="the entry's setting they ran, as its grid names it (optimizer=adam)")
    take.add_argument("source", help="the study grid's folder of that setting's runs (OUT/runs/SETTING)")
    smoke = sub.add_parser("smoke", help="a few thousand steps of ppo-hopper into --out, with its page")
    smoke.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.what is None:
        listing()
    elif args.what == "page":
        write_page(DOCS / "results", DOCS / "results.md")
        print(f"wrote {DOCS / 'results.md'}", file=sys.stderr)
    elif args.what == "run":
        names = [e.name for e in ENTRIES if e.suite == args.suite] if args.names == ["all"] else args.names
        unknown = [n for n in names if n not in BY_NAME]
        if unknown:
            sys.exit(f"error: no entry {', '.join(unknown)}; the entries: {', '.join(BY_NAME)}")
        for flag in ("seeds", "workers"):
            if getattr(args, flag) is not None and getattr(args, flag) < 1:
                sys.exit(f"error: --{flag} must be at least 1 (got {getattr(args, flag)})")
        for name in names:
            run_entry(BY_NAME[name], RUNS / name, DOCS / "results", seeds=args.seeds, workers=args.workers)
            write_page(DOCS / "results", DOCS / "results.md")
        print(f"wrote {DOCS / 'results.md'}", file=sys.stderr)
    elif args.what == "adopt":
        if args.name not in BY_NAME:
            sys.exit(f"error: no entry {args.name}; the entries: {', '.join(BY_NAME)}")
        made = adopt(BY_NAME[args.name], args.setting, Path(args.source), RUNS / args.name)
        print(f"adopted {len(made)} run(s) into {RUNS / args.name}" + "".join(f"\n  {m}" for m in made)
              + f"\nnext: {BY_NAME[args.name].command()}", file=sys.stderr)
    else:
        out = Path(args.out)
        entry = BY_NAME["ppo-hopper"]
        # 2 rollouts of 2,048 steps, evaluated at the end: the whole path, from grid to page, in seconds
        run_entry(entry, out / "runs", out / "results", budget=4096, seeds=1)
        write_page(out / "results", out / "results.md")
        print(f"wrote {out / 'results.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()

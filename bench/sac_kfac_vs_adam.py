"""SAC with K-FAC against SAC with Adam over seeds: final and area-under-curve evaluation return with 95%
bootstrap intervals, steps to a return threshold, and the curves against env steps and wall-clock time.

    python bench/sac_kfac_vs_adam.py --env HalfCheetah --seeds 5 --total-timesteps 20000 --out runs/sac_kfac_vs_adam

(A stand-in for `python -m studies.grid --agent sac --optimizers kfac adam`, which has not landed.)
Every (optimizer, seed) is a run of the real trainer (`python -m agents.sac`, its defaults but the
budget and the evaluation interval), one after the other, into OUT/runs; a run whose final.pt exists is
not run again, so a killed comparison restarted with the same command runs only what is missing.
Each run is scored by its evaluations during training (`eval/episodic_return`: --eval-episodes
deterministic episodes every --eval-interval steps): its last evaluation (final), the mean over its
evaluations (area under the curve per step), and the first step whose evaluation reaches
--threshold. The table gives each optimizer's mean over seeds with a 95% percentile-bootstrap
interval (10,000 resamples of the seeds) and the K-FAC minus Adam difference with its own interval
(seeds resampled independently per optimizer). Writes OUT/table.md and OUT/curves.png; last line
machine-readable: `kfac_final=... adam_final=... gain=... gain_lo=... gain_hi=...`.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.events import read_curve  # noqa: E402
from studies import compare  # noqa: E402

OPTIMIZERS = ("kfac", "adam")
TAG = "eval/episodic_return"


def run_folder(runs: Path, env_id: str, seed: int, optimizer: str) -> Path | None:
    """The finished run of (seed, optimizer) under `runs`, if any (its config.json names the optimizer)."""
    import json

    for folder in sorted(runs.glob(f"{env_id}__sac__{seed}__*")):
        config = folder / "config.json"
        if (folder / "final.pt").exists() and config.exists():
            if json.loads(config.read_text()).get("optimizer", "").lower() == optimizer:
                return folder
    return None


def bootstrap(samples: np.ndarray, rng: np.random.Generator, n: int = 10_000) -> tuple[float, float]:
    means = rng.choice(samples, size=(n, len(samples)), replace=True).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="HalfCheetah")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--total-timesteps", type=int, default=20_000)
    parser.add_argument("--eval-interval", type=int, default=2_000)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--threshold", type=float, default=None,
                        help="return to reach (default: halfway from the first evaluation to the best final mean)")
    parser.add_argument("--out", default="runs/sac_kfac_vs_adam")
    args = parser.parse_args()

    import envs

    env_id = envs.resolve(args.env).id
    out = Path(args.out)
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    folders: dict[str, list[Path]] = {o: [] for o in OPTIMIZERS}
    for seed in range(1, args.seeds + 1):
        for optimizer in OPTIMIZERS:
            folder = run_folder(runs, env_id, seed, optimizer)
            if folder is None:
                print(f"running {optimizer} seed {seed}", file=sys.stderr, flush=True)
                cmd = [sys.executable, "-m", "agents.sac", "--env", args.env, "--optimizer", optimizer,
                       "--seed", str(seed), "--total-timesteps", str(args.total_timesteps),
                       "--eval-interval", str(args.eval_interval), "--eval-episodes", str(args.eval_episodes),
                       "--checkpoint-interval", "0", "--logdir", str(runs)]
                done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                if done.returncode != 0:
                    sys.exit(f"{' '.join(cmd[1:])} failed: {done.stderr.strip().splitlines()[-1:]}")
                folder = run_folder(runs, env_id, seed, optimizer)
            folders[optimizer].append(folder)

    curves = {o: [read_curve(f, TAG)[0] for f in folders[o]] for o in OPTIMIZERS}
    final = {o: np.array([c.values[-1] for c in curves[o]]) for o in OPTIMIZERS}
    auc = {o: np.array([c.values.mean() for c in curves[o]]) for o in OPTIMIZERS}
    # default: halfway from the first evaluation (the untrained policy) to the best optimizer's final mean
    start = np.mean([c.values[0] for o in OPTIMIZERS for c in curves[o]])
    threshold = args.threshold if args.threshold is not None else start + 0.5 * (
        max(final[o].mean() for o in OPTIMIZERS) - start)

    def steps_to(c) -> float:
        hit = np.flatnonzero(c.values >= threshold)
        return float(c.steps[hit[0]]) if len(hit) else float("nan")

    reach = {o: np.array([steps_to(c) for c in curves[o]]) for o in OPTIMIZERS}
    rng = np.random.default_rng(0)
    lines = [f"# SAC on {env_id}: K-FAC (over Adam) against Adam",
             "",
             f"{args.seeds} seeds per optimizer, {args.total_timesteps:,} env steps each, evaluated every "
             f"{args.eval_interval:,} steps ({args.eval_episodes} deterministic episodes). Means over seeds "
             "with 95% bootstrap intervals.",
             "",
             f"| optimizer | final return | AUC (mean evaluation) | steps to {threshold:.0f} (seeds that reach it) |",
             "|-|-|-|-|"]
    for o in OPTIMIZERS:
        lo, hi = bootstrap(final[o], rng)
        alo, ahi = bootstrap(auc[o], rng)
        hit = reach[o][~np.isnan(reach[o])]
        steps = f"{hit.mean():,.0f} ({len(hit)}/{len(hit) + int(np.isnan(reach[o]).sum())})" if len(hit) else "never"
        lines.append(f"| {o} | {final[o].mean():.1f} [{lo:.1f}, {hi:.1f}] | {auc[o].mean():.1f} [{alo:.1f}, {ahi:.1f}] "
                     f"| {steps} |")
    diffs = (rng.choice(final["kfac"], (10_000, args.seeds)).mean(1) - rng.choice(final["adam"], (10_000, args.seeds)).mean(1))
    gain, gain_lo, gain_hi = final["kfac"].mean() - final["adam"].mean(), *np.percentile(diffs, [2.5, 97.5])
    auc_diffs = (rng.choice(auc["kfac"], (10_000, args.seeds)).mean(1) - rng.choice(auc["adam"], (10_000, args.seeds)).mean(1))
    auc_gain, auc_lo, auc_hi = auc["kfac"].mean() - auc["adam"].mean(), *np.percentile(auc_diffs, [2.5, 97.5])
    lines += ["", f"K-FAC minus Adam: final {gain:+.1f} [{gain_lo:+.1f}, {gain_hi:+.1f}], "
                  f"AUC {auc_gain:+.1f} [{auc_lo:+.1f}, {auc_hi:+.1f}]."]
    table = "\n".join(lines)
    (out / "table.md").write_text(table + "\n")
    print(table)

    groups = compare.group_runs(compare.load_runs([str(f) for o in OPTIMIZERS for f in folders[o]], TAG))
    compare.plot(groups, TAG, 1, out / "curves.png")
    print(f"figure: {out / 'curves.png'}")
    print(f"kfac_final={final['kfac'].mean():.1f} adam_final={final['adam'].mean():.1f} gain={gain:.1f} "
          f"gain_lo={gain_lo:.1f} gain_hi={gain_hi:.1f}")


if __name__ == "__main__":
    main()

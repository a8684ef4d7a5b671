"""SAC's training steps/s on HalfCheetah-v5 after learning starts, and the whole command's time: ours with
K-FAC, ours with Adam, and CleanRL's sac_continuous_action.py, side by side in one run.

    python bench/sac_speed.py [--steps 2000] [--learning-starts 1000] [--rounds 2] [--device cpu] [--compile]

- ours, `--optimizer kfac` (its defaults, or each `--kfac FLAGS` setting) and `--optimizer adam` (with
  --compile, also `--optimizer adam --compile`, its compilation counted in the timed steps): the real
  trainer (`python -m agents.sac`) in a subprocess; the figure is its own "steps/s after learning
  starts" line, and a K-FAC setting's step cost is Adam's steps/s over its own.
- cleanrl: CleanRL's script as it runs (bench/cleanrl_sac.py: its env wrappers, SB3's replay buffer,
  separate Q networks and targets, its optimizers and its update order, with the actor updated twice
  every second step), in a subprocess, with the same --learning-starts and --steps.
Each command plays --learning-starts random steps, then --steps steps with one update each (CleanRL's
critics: one per step; its actor: two every other step). "whole" is the command's wall time, start-up,
warm-up and exit included. Last line: `sac_kfac_sps=... sac_adam_sps=... cleanrl_sps=... kfac_over_adam=...`
(the cost of a K-FAC step relative to an Adam one: adam_sps / kfac_sps).
"""
from __future__ import annotations

import argparse
import sys
import tempfile

from commands import ROOT, timed_command


def ours(optimizer: str, args, extra: list[str] = ()) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as logdir:
        return timed_command([sys.executable, "-m", "agents.sac", "--env", "HalfCheetah", "--optimizer", optimizer,
                              *extra, "--total-timesteps", str(args.learning_starts + args.steps),
                              "--learning-starts", str(args.learning_starts), "--eval-interval", "0",
                              "--checkpoint-interval", "0", "--device", args.device, "--logdir", logdir],
                             f"sac --optimizer {optimizer}")[:2]


def cleanrl(args) -> tuple[float, float]:
    """CleanRL's script as bench/cleanrl_sac.py writes it out."""
    return timed_command([sys.executable, str(ROOT / "bench" / "cleanrl_sac.py"), "--total-timesteps",
                          str(args.learning_starts + args.steps), "--learning-starts", str(args.learning_starts),
                          "--device", args.device], "cleanrl_sac.py")[:2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="timed env steps (one update each)")
    parser.add_argument("--learning-starts", type=int, default=1000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--kfac", action="append", default=None, metavar="FLAGS",
                        help="a K-FAC setting to time, as the trainer's flags in one string (repeatable), e.g. "
                             "'--kfac-combine graft --kfac-factor-interval 2'; default: the trainer's default")
    parser.add_argument("--no-cleanrl", action="store_true", help="leave CleanRL's script out")
    parser.add_argument("--compile", action="store_true", help="also time ours with Adam and --compile (its "
                        "compilation falls in the timed steps: give it --steps enough to pay it back)")
    args = parser.parse_args()

    # Rounds alternate the commands, and each keeps its best round: on a shared 2-core machine a run's
    # speed drifts by 20% from one minute to the next, and the best of each is the least disturbed.
    kfacs = {f"kfac {flags}".strip(): flags.split() for flags in (args.kfac or [""])}
    names = [*kfacs, "adam"] + (["adam --compile"] if args.compile else []) + ([] if args.no_cleanrl else ["cleanrl"])
    best = {name: (0.0, 0.0) for name in names}
    for r in range(args.rounds):
        for name in names:
            if name == "cleanrl":
                sps, whole = cleanrl(args)
            else:
                sps, whole = ours("kfac", args, kfacs[name]) if name in kfacs else ours("adam", args, name.split()[1:])
            if sps > best[name][0]:
                best[name] = (sps, whole)
            print(f"round {r + 1}: {name} {sps:.1f} steps/s, whole command {whole:.1f} s", flush=True)
    adam = best["adam"][0]
    for name, (sps, whole) in best.items():
        ratio = f"  step cost {adam / sps:.2f}x Adam's" if name in kfacs else ""
        versus = f"  {sps / best['cleanrl'][0]:.2f}x CleanRL" if "cleanrl" in best and name != "cleanrl" else ""
        print(f"{name:<50} {sps:6.1f} steps/s  whole {whole:5.1f} s{versus}{ratio}  (best of {args.rounds})")
    first = next(iter(kfacs))
    tail = f" cleanrl_sps={best['cleanrl'][0]:.1f}" if "cleanrl" in best else ""
    tail += f" adam_compiled_sps={best['adam --compile'][0]:.1f}" if args.compile else ""
    print(f"sac_kfac_sps={best[first][0]:.1f} sac_adam_sps={adam:.1f}{tail} kfac_over_adam={adam / best[first][0]:.2f}")


if __name__ == "__main__":
    main()

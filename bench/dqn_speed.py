"""DQN on Breakout: env steps/s after learning starts and the whole command's time, our trainer beside
CleanRL's dqn_atari.py, side by side in one run.

    python bench/dqn_speed.py [--steps 4000] [--learning-starts 2000] [--rounds 2] [--device cpu] [--compile] [--bf16]

- ours: the real trainer, `python -m agents.dqn --env Breakout` (ale-py's C++ vector env, the
  one-frame-per-step replay memory, DeepMind's RMSprop), in a subprocess; the figure is its own
  "steps/s after learning starts" line.
- cleanrl: CleanRL's script as it runs (bench/cleanrl_dqn.py: SB3's Atari wrappers and replay buffer,
  the NCHW Nature CNN, Adam), in a subprocess.
Each command plays --learning-starts steps first, then --steps steps with an update of batch 32 every
4 steps, each with its own optimizer and env defaults (ours: ALE v5 with sticky actions 0.25; CleanRL:
NoFrameskip-v4), and a replay of --buffer-size transitions (100k: CleanRL's default 1M asks numpy for
26.3 GiB of observations at start, which a 24 GB machine refuses; ours would take 7 GB, as pages fill).
Both act at epsilon 0.01 once learning starts (a forward at
nearly every step): ours anneals epsilon after learning starts, CleanRL from step 0, so each is given the
schedule that reaches 0.01 at learning_starts. "whole" is the command's wall time, start-up and warm-up
included. --compile adds ours with --compile (its compilation counted in the timed steps); --bf16 adds ours
with --amp bf16 (the update's forward and backward under bfloat16 autocast, weights and optimizer
float32; fast on CPUs with bfloat16 instructions, AVX512-BF16 or AMX). Last line:
`train_sps ours=X cleanrl=Y ratio=R [compiled=Z] [bf16=W bf16_ratio=V]`.
"""
from __future__ import annotations

import argparse
import sys
import tempfile

from commands import ROOT, timed_command


def ours(args, extra: tuple[str, ...] = ()) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as logdir:
        return timed_command([sys.executable, "-m", "agents.dqn", "--env", "Breakout", "--total-timesteps",
                      str(args.learning_starts + args.steps), "--learning-starts", str(args.learning_starts),
                      "--end-e", "0.01", "--exploration-steps", "1", "--buffer-size", str(args.buffer_size),
                      "--eval-interval", "0",
                      "--checkpoint-interval", "0", "--device", args.device, "--logdir", logdir, *extra],
                             " ".join(["agents.dqn", *extra]))[:2]


def cleanrl(args) -> tuple[float, float]:
    total = args.learning_starts + args.steps
    return timed_command([sys.executable, str(ROOT / "bench" / "cleanrl_dqn.py"), "--total-timesteps", str(total),
                  "--learning-starts", str(args.learning_starts), "--end-e", "0.01",
                  "--buffer-size", str(args.buffer_size),
                  "--exploration-fraction", str(args.learning_starts / total), "--device", args.device],
                         "cleanrl_dqn.py")[:2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=4000, help="timed env steps (an update every 4)")
    parser.add_argument("--learning-starts", type=int, default=2000)
    parser.add_argument("--buffer-size", type=int, default=100_000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also time ours with --compile (its compilation "
                        "falls in the timed steps: give it --steps enough to pay it back)")
    parser.add_argument("--bf16", action="store_true", help="also time ours with --amp bf16")
    args = parser.parse_args()

    # Rounds alternate the commands and each keeps its best: a shared machine's speed drifts.
    commands = {"ours": ours, "cleanrl": cleanrl}
    if args.compile:
        commands["ours --compile"] = lambda args: ours(args, ("--compile",))
    if args.bf16:
        commands["ours --amp bf16"] = lambda args: ours(args, ("--amp", "bf16"))
    best = {name: (0.0, 0.0) for name in commands}
    for r in range(args.rounds):
        for name, fn in commands.items():
            sps, whole = fn(args)
            if sps > best[name][0]:
                best[name] = (sps, whole)
            print(f"round {r + 1}: {name} {sps:.1f} steps/s, whole command {whole:.1f} s", flush=True)
    for name, (sps, whole) in best.items():
        print(f"{name:<15} {sps:7.1f} steps/s  whole {whole:6.1f} s  (best of {args.rounds})")
    o, c = best["ours"][0], best["cleanrl"][0]
    tail = f" compiled={best['ours --compile'][0]:.1f}" if args.compile else ""
    if args.bf16:
        tail += f" bf16={best['ours --amp bf16'][0]:.1f} bf16_ratio={best['ours --amp bf16'][0] / c:.2f}"
    print(f"train_sps ours={o:.1f} cleanrl={c:.1f} ratio={o / c:.2f}{tail}")


if __name__ == "__main__":
    main()

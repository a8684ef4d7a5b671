"""Rainbow's and DQN's training steps/s on Breakout after learning starts, in one run, and the sum tree's
time to draw a prioritized batch of 32 out of 1M entries.

    python bench/rainbow_speed.py [--steps 3000] [--learning-starts 2000] [--device cpu] [--compile] [--bf16]

Each agent is its real trainer (`python -m agents.rainbow` / `agents.dqn`, atari presets, a 100k
replay so the memory's pages stay few) run in a subprocess one after the other; the figure is the
trainer's own "steps/s after learning starts" line: acting, env steps, replay and every update
(Rainbow: its network acts at every step, and an update every 4 steps makes 3 forward passes, noise
draws and priority updates; DQN: an update every 4 steps, and its network acts at epsilon 0.1 from
the first update on, its level for most of a run, rather than at the nearly 1.0 of the first steps
of its 1M-step anneal, when it hardly runs the network to act). The sum tree is timed alone: stratified
draws of 32 over 1M positive leaves, their probabilities and importance weights, and the batch priority
update that follows.
Last line: `rainbow_sps=... dqn_sps=... ratio=... sumtree_sample_us=... sumtree_update_us=...`.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agents.replay import SumTree  # noqa: E402


def trainer_sps(module: str, args: argparse.Namespace, *extra: str) -> float:
    with tempfile.TemporaryDirectory() as logdir:
        cmd = [sys.executable, "-m", module, *extra, "--env", "Breakout", "--total-timesteps",
               str(args.learning_starts + args.steps), "--learning-starts", str(args.learning_starts),
               "--buffer-size", "100000", "--eval-interval", "0", "--checkpoint-interval", "0",
               "--device", args.device, "--logdir", logdir, "--seed", "1"]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    found = re.search(r"steps/s after learning starts: ([0-9.]+)", out.stderr)
    if out.returncode != 0 or not found:
        sys.exit(f"{module} failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}")
    return float(found.group(1))


def sum_tree_times(size: int = 1_000_000, batch: int = 32, reps: int = 2000) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    tree = SumTree(size)
    tree.set(np.arange(size), rng.random(size) + 1e-3)
    t0 = time.perf_counter()
    for _ in range(reps):
        total = tree.total
        mass = (np.arange(batch) + rng.random(batch)) * (total / batch)
        leaf = tree.find(mass)
        p = tree.get(leaf) / total
        (p / p.min()) ** -0.4
    sample = (time.perf_counter() - t0) / reps
    t0 = time.perf_counter()
    for _ in range(reps):
        index = np.unique(rng.integers(0, size, batch))
        tree.set(index, rng.random(len(index)) + 0.5)
    update = (time.perf_counter() - t0) / reps
    return sample * 1e6, update * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3000, help="timed env steps after learning starts")
    parser.add_argument("--learning-starts", type=int, default=2000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="also time Rainbow with --compile (its "
                        "compilation falls in the timed steps: give it --steps enough to pay it back)")
    parser.add_argument("--bf16", action="store_true", help="also time Rainbow and DQN with --amp bf16 "
                        "(bfloat16 autocast of the updates)")
    args = parser.parse_args()

    sample_us, update_us = sum_tree_times()
    print(f"sum tree, 1M leaves: draw 32 (stratified, with weights) {sample_us:.1f} us, update 32 {update_us:.1f} us")
    rainbow = trainer_sps("agents.rainbow", args)
    print(f"Rainbow (atari preset): {rainbow:.1f} steps/s after learning starts")
    dqn = trainer_sps("agents.dqn", args, "--exploration-steps", "1")
    print(f"DQN (atari preset):     {dqn:.1f} steps/s after learning starts")
    tail = ""
    if args.compile:
        compiled = trainer_sps("agents.rainbow", args, "--compile")
        print(f"Rainbow --compile:      {compiled:.1f} steps/s after learning starts (compilation included)")
        tail = f" rainbow_compiled_sps={compiled:.1f}"
    if args.bf16:
        rainbow16 = trainer_sps("agents.rainbow", args, "--amp", "bf16")
        dqn16 = trainer_sps("agents.dqn", args, "--exploration-steps", "1", "--amp", "bf16")
        print(f"--amp bf16: Rainbow {rainbow16:.1f}, DQN {dqn16:.1f} steps/s after learning starts")
        tail += f" rainbow_bf16_sps={rainbow16:.1f} dqn_bf16_sps={dqn16:.1f} bf16_ratio={rainbow16 / dqn16:.2f}"
    print(f"rainbow_sps={rainbow:.1f} dqn_sps={dqn:.1f} ratio={rainbow / dqn:.2f} "
          f"sumtree_sample_us={sample_us:.1f} sumtree_update_us={update_us:.1f}{tail}")


if __name__ == "__main__":
    main()

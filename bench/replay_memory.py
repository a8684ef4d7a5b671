"""Replay memory bytes per Atari transition, against buffers that store stacked obs and next obs.

    python bench/replay_memory.py [--capacity 1000000]

Allocates (lazily: untouched pages cost nothing) a 1M-transition Atari buffer, uniform (DQN) and
prioritized (Rainbow), fills a slice of
it from the real Breakout env to time `add` and `sample`, and prints, per design, the bytes one
transition costs. Last line: `bytes_per_transition=N prioritized=M`.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import envs
from agents.replay import ReplayMemory

FRAME = 84 * 84


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--capacity", type=int, default=1_000_000)
    parser.add_argument("--fill", type=int, default=20_000, help="env steps added to time add/sample")
    args = parser.parse_args()

    memory = ReplayMemory(args.capacity, 1, (4, 84, 84), np.uint8, frame_stack=4, action_dtype=np.uint8)
    ours = memory.nbytes / args.capacity
    # Rainbow's: the same storage with a sum tree (2 float64 nodes per leaf) and pending priorities
    prioritized = ReplayMemory(args.capacity, 1, (4, 84, 84), np.uint8, frame_stack=4, action_dtype=np.uint8,
                               n_step=3, prioritized=True)
    ours_prioritized = prioritized.nbytes / args.capacity
    # Other designs, per transition: obs and next_obs as 4-frame uint8 stacks (SB3's default), obs
    # stacks only with next_obs read from the next slot (SB3's optimize_memory_usage), and the
    # figures published in ../shared/NOTES.md.
    rows = [
        ("this replay (one frame per step)", ours),
        ("  + prioritized (Rainbow)", ours_prioritized),
        ("obs + next_obs stacks (SB3 default)", 2 * 4 * FRAME + 1 + 4 + 1 * 2),
        ("obs stacks, next from next slot", 4 * FRAME + 1 + 4 + 1 * 2),
    ]
    print(f"{'design':40s} {'bytes/transition':>16s} {'GB per 1M':>10s}")
    for name, b in rows:
        print(f"{name:40s} {b:16.0f} {b * 1e6 / 1e9:10.2f}")

    env = envs.make("Breakout", num_envs=1, sticky_actions=0.25)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    t_add = t_add_prioritized = 0.0
    for _ in range(args.fill):
        action = rng.integers(0, env.single_action_space.n, size=1)
        next_obs, reward, terminated, truncated, info = env.step(action)
        t0 = time.perf_counter()
        memory.add(obs, action, reward, terminated, info["episode_end"])
        t_add += time.perf_counter() - t0
        t0 = time.perf_counter()
        prioritized.add(obs, action, reward, terminated, info["episode_end"])
        t_add_prioritized += time.perf_counter() - t0
        obs = next_obs
    # interleaved, so that neither memory is timed in a warmer or colder stretch than the other
    t_sample = t_prioritized = 0.0
    for i in range(500):
        t0 = time.perf_counter()
        memory.sample(32, rng)
        t1 = time.perf_counter()
        batch = prioritized.sample(32, rng, beta=0.4)
        prioritized.update_priorities(batch["index"], batch["rewards"].abs() + 0.1)
        t2 = time.perf_counter()
        if i >= 100:  # warm-up left out
            t_sample += (t1 - t0) / 400
            t_prioritized += (t2 - t1) / 400
    print(f"uniform:     add {t_add / args.fill * 1e6:.1f} us/step   sample(32) {t_sample * 1e3:.2f} ms/batch")
    print(f"prioritized: add {t_add_prioritized / args.fill * 1e6:.1f} us/step   sample(32) 3-step + priority update "
          f"{t_prioritized * 1e3:.2f} ms/batch")
    print(f"bytes_per_transition={ours:.0f} prioritized={ours_prioritized:.0f}")


if __name__ == "__main__":
    main()

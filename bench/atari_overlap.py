"""What DQN's trainer gains on Atari by running an update while ale-py plays the env step (send, update,
recv) rather than after it (step, update), in one process with the trainer's own parts.

    python bench/atari_overlap.py [--rounds 6] [--per-round 60] [--device cpu]

DQN's atari preset on Breakout: its env (ale-py's vector env, 1 game), Q-network, RMSprop and replay
memory (10k transitions of random play first); each round times --per-round env steps alone, then as
many (env step + replay draw + update) one after the other, then as many with the update between the
step's send and recv. An update is due every 4 steps in a run; here every step has one, so the figure
is the most the overlap can save per update. Rounds alternate the two orders; medians are reported.
Last line: `env_ms=... in_turn_ms=... beside_ms=... saved_ms=...` (per step with an update).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents import dqn, replay  # noqa: E402
from common import device as devices  # noqa: E402
from common.precision import Precision  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--per-round", type=int, default=60)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    cfg = dqn.prepare(dqn.Config(env="Breakout", device=args.device))
    device = devices.pick(cfg.device)
    env = dqn.make_env(cfg, 1)
    q_net = dqn.make_q_network(cfg, env, device)
    target_net = dqn.make_q_network(cfg, env, device)
    optimizer = dqn.make_optimizer(cfg, q_net.parameters())
    amp = Precision.of(cfg.amp, device)
    rb = replay.for_env(env, 10_000, 1, device)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=1)
    for _ in range(10_000):
        actions = rng.integers(0, 4, size=1)
        next_obs, rewards, terminated, _, info = env.step(actions)
        rb.add(obs, actions, rewards, terminated, info["episode_end"])
        obs = next_obs

    def update():
        dqn.learn(q_net, target_net, optimizer, amp, rb.sample(cfg.batch_size, rng), cfg)
        if device.type == "cuda":  # the update's kernels done, as the next step's acting would wait for them
            torch.cuda.synchronize()

    def timed(one_step) -> float:
        t0 = time.perf_counter()
        for _ in range(args.per_round):
            one_step(rng.integers(0, 4, size=1))
        return (time.perf_counter() - t0) / args.per_round * 1e3

    def in_turn(actions):
        env.step(actions)
        update()

    def beside(actions):
        env.send(actions)
        update()
        env.recv()

    for _ in range(5):
        beside(rng.integers(0, 4, size=1))  # warm up
    env_ms, turn_ms, beside_ms = [], [], []
    for r in range(args.rounds):
        env_ms.append(timed(env.step))
        orders = [(turn_ms, in_turn), (beside_ms, beside)]
        for figures, one_step in orders if r % 2 == 0 else orders[::-1]:
            figures.append(timed(one_step))
        print(f"round {r + 1}: env {env_ms[-1]:.2f} ms, step then update {turn_ms[-1]:.2f} ms, "
              f"update beside the step {beside_ms[-1]:.2f} ms", flush=True)
    env.close()
    e, t, b = (statistics.median(x) for x in (env_ms, turn_ms, beside_ms))
    print(f"env_ms={e:.2f} in_turn_ms={t:.2f} beside_ms={b:.2f} saved_ms={t - b:.2f}")


if __name__ == "__main__":
    main()

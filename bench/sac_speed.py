"""SAC's training steps/s on HalfCheetah-v5 after learning starts: ours with K-FAC, ours with Adam, and a
CleanRL-style loop, in one run.

    python bench/sac_speed.py [--steps 2000] [--learning-starts 1000] [--rounds 2] [--device cpu]

- ours, `--optimizer kfac` (its defaults, or each `--kfac FLAGS` setting) and `--optimizer adam`: the real
  trainer (`python -m agents.sac`) in a subprocess; the figure is its own "steps/s after learning
  starts" line, and a K-FAC setting's step cost is Adam's steps/s over its own.
- CleanRL-style (sac_continuous_action.py's structure, with the same networks and one actor update
  per step like ours): gymnasium's HalfCheetah-v5 with RecordEpisodeStatistics, a numpy buffer of
  (obs, next_obs) pairs, one torch Adam over both critics and one over the actor (torch's default
  per-tensor path on the CPU), the actor's loss backpropagated into the critics' weights as well,
  and a Python loop over parameters for the Polyak update.
Each loop plays --learning-starts random steps first (not timed), then --steps timed steps with one
update each. Last line: `sac_kfac_sps=... sac_adam_sps=... cleanrl_sps=... kfac_over_adam=...`
(the cost of a K-FAC step relative to an Adam one: adam_sps / kfac_sps).
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
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agents.sac import Actor, Critics  # noqa: E402


def ours(optimizer: str, args, extra: list[str] = ()) -> float:
    with tempfile.TemporaryDirectory() as logdir:
        cmd = [sys.executable, "-m", "agents.sac", "--env", "HalfCheetah", "--optimizer", optimizer, *extra,
               "--total-timesteps", str(args.learning_starts + args.steps), "--learning-starts",
               str(args.learning_starts), "--eval-interval", "0", "--checkpoint-interval", "0",
               "--device", args.device, "--logdir", logdir]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    found = re.search(r"steps/s after learning starts: ([0-9.]+)", out.stderr)
    if out.returncode != 0 or not found:
        sys.exit(f"sac --optimizer {optimizer} failed: {out.stderr.strip().splitlines()[-1:]}")
    return float(found.group(1))


def cleanrl_style(args) -> float:
    import gymnasium as gym

    device = torch.device(args.device)
    torch.manual_seed(1)
    env = gym.wrappers.RecordEpisodeStatistics(gym.make("HalfCheetah-v5"))
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    actor = Actor(obs_dim, act_dim, (256, 256)).to(device)
    critics = Critics(obs_dim, act_dim, (256, 256)).to(device)
    target = Critics(obs_dim, act_dim, (256, 256)).to(device)
    target.load_state_dict(critics.state_dict())
    q_opt = torch.optim.Adam(critics.parameters(), lr=3e-4)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=3e-4)
    log_alpha = torch.zeros(1, requires_grad=True, device=device)
    alpha_opt = torch.optim.Adam([log_alpha], lr=3e-4)
    n = args.learning_starts + args.steps
    buf = {"obs": np.zeros((n, obs_dim), np.float32), "next_obs": np.zeros((n, obs_dim), np.float32),
           "actions": np.zeros((n, act_dim), np.float32), "rewards": np.zeros(n, np.float32),
           "dones": np.zeros(n, np.float32)}
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=1)
    t0 = None
    for step in range(n):
        if step < args.learning_starts:
            action = env.action_space.sample()
        else:
            with torch.no_grad():
                action = actor.sample(torch.as_tensor(obs, device=device).unsqueeze(0))[0][0].cpu().numpy()
        next_obs, reward, terminated, truncated, _ = env.step(action)
        for k, v in (("obs", obs), ("next_obs", next_obs), ("actions", action), ("rewards", reward),
                     ("dones", terminated)):
            buf[k][step] = v
        obs = env.reset()[0] if terminated or truncated else next_obs
        if step < args.learning_starts:
            continue
        if t0 is None:
            t0 = time.perf_counter()
        idx = rng.integers(0, step + 1, size=256)
        b = {k: torch.as_tensor(v[idx], device=device) for k, v in buf.items()}
        alpha = log_alpha.exp().detach()
        with torch.no_grad():
            next_a, next_logp = actor.sample(b["next_obs"])
            y = b["rewards"] + 0.99 * (1 - b["dones"]) * (torch.min(*target(b["next_obs"], next_a)) - alpha * next_logp)
        q1, q2 = critics(b["obs"], b["actions"])
        q_loss = F.mse_loss(q1, y) + F.mse_loss(q2, y)
        q_opt.zero_grad()
        q_loss.backward()
        q_opt.step()
        a, logp = actor.sample(b["obs"])
        actor_loss = (alpha * logp - torch.min(*critics(b["obs"], a))).mean()
        actor_opt.zero_grad()
        actor_loss.backward()
        actor_opt.step()
        alpha_loss = (-log_alpha.exp() * (logp.detach() - act_dim)).mean()
        alpha_opt.zero_grad()
        alpha_loss.backward()
        alpha_opt.step()
        for p, tp in zip(critics.parameters(), target.parameters()):
            tp.data.copy_(0.005 * p.data + 0.995 * tp.data)
    return args.steps / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="timed env steps (one update each)")
    parser.add_argument("--learning-starts", type=int, default=1000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--kfac", action="append", default=None, metavar="FLAGS",
                        help="a K-FAC setting to time, as the trainer's flags in one string (repeatable), e.g. "
                             "'--kfac-combine graft --kfac-factor-interval 2'; default: the trainer's default")
    parser.add_argument("--no-cleanrl", action="store_true", help="leave the CleanRL-style loop out")
    args = parser.parse_args()

    # Rounds alternate the settings, and each keeps its best round: on a shared 2-core machine a run's
    # speed drifts by 20% from one minute to the next, and the best of each is the least disturbed.
    kfacs = {f"kfac {flags}".strip(): flags.split() for flags in (args.kfac or [""])}
    best = {**{name: 0.0 for name in kfacs}, "adam": 0.0}
    if not args.no_cleanrl:
        best["cleanrl"] = 0.0
    for r in range(args.rounds):
        for name in best:
            if name == "cleanrl":
                sps = cleanrl_style(args)
            else:
                sps = ours("adam", args) if name == "adam" else ours("kfac", args, kfacs[name])
            best[name] = max(best[name], sps)
            print(f"round {r + 1}: {name} {sps:.1f} steps/s", flush=True)
    adam = best["adam"]
    for name, sps in best.items():
        ratio = f"  (step cost {adam / sps:.2f}x Adam's)" if name in kfacs else ""
        print(f"{name:<60} {sps:6.1f} steps/s{ratio}  (best of {args.rounds})")
    first = next(iter(kfacs))
    tail = f" cleanrl_sps={best['cleanrl']:.1f}" if "cleanrl" in best else ""
    print(f"sac_kfac_sps={best[first]:.1f} sac_adam_sps={adam:.1f}{tail} kfac_over_adam={adam / best[first]:.2f}")


if __name__ == "__main__":
    main()

"""PPO on Breakout: env steps/s and the whole command's time, our trainer beside CleanRL's ppo_atari.py, and
each one's rollout and update timed apart.

    python bench/ppo_speed.py [--updates 3] [--envs 8 32] [--device cpu] [--threads T] [--compile] [--bf16]

Whole commands, each in a subprocess with 8 envs and (--updates + 1) iterations of 128 steps per env:
- ours: `python -m agents.ppo --env Breakout` (atari preset, evaluation and checkpoints off); the figure
  is its own "steps/s after learning starts" line (from its first rollout; PPO learns from the start).
- cleanrl: CleanRL's script as it runs (bench/cleanrl_ppo.py: SB3's Atari wrappers in a SyncVectorEnv,
  float32 storage, the NCHW network, its update), with its own SPS and its rollout and update seconds.
In this process, after one warm-up cycle, --updates timed cycles per env count:
- ours: agents.ppo's collect, training_batch and update as train() drives them (ale-py's C++ vector
  env, RolloutStorage on the device, the channels-last Nature CNN, the atari preset), the rollout and
  the update timed apart, with the per-update host reads train() makes for its log line.
- env: the same vector env stepped with random actions, no network.
--compile adds ours with --compile: the whole command (compilation included) and the in-process cycles
(compiled in the warm-up cycle, which is not timed). --bf16 adds our whole command with --amp bf16 (the
update under bfloat16 autocast; fast on CPUs with bfloat16 instructions).
Last line: `ppo_sps ours8=.. cleanrl8=.. ratio8=.. whole_ours=.. whole_cleanrl=.. ...` (ratio8: the whole
commands' steps/s, ours over CleanRL's; rollout_/update_ keys: seconds of the in-process split).
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time

import numpy as np
import torch

import envs
from agents import ppo
from agents.rollout import RolloutStorage
from common import device as devices, distributed
from common.compiled import compiled
from common.precision import Precision
from common.seeding import seed_everything
from commands import ROOT, timed_command

NUM_STEPS = 128


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(cycle, updates: int, device: torch.device) -> float:
    """Seconds for `updates` calls of cycle(i) after one warm-up call."""
    cycle(0)
    sync(device)
    t0 = time.perf_counter()
    for i in range(1, updates + 1):
        cycle(i)
    sync(device)
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------------------------
# ours: agents.ppo's rollout and update, as train() drives them
# ------------------------------------------------------------------------------------------------


def run_ours(num_envs: int, args, device: torch.device, compile_: bool = False) -> tuple[float, float, float]:
    cycles = args.updates + 1
    cfg = ppo.prepare(ppo.Config(env="Breakout", num_envs=num_envs, device=str(device),
                                 total_timesteps=num_envs * NUM_STEPS * cycles))
    world = distributed.World()
    seed_everything(cfg.seed)
    env = ppo.make_env(cfg, num_envs)
    agent = ppo.make_agent(cfg, env, device)
    optimizer = ppo.make_optimizer(cfg, agent.parameters())
    amp = Precision.of(cfg.amp, device)
    generator = torch.Generator().manual_seed(cfg.seed)
    loss_fn, act = compiled(ppo.ppo_loss, compile_), compiled(agent.act_and_value, compile_)  # as train() does
    obs_space, act_space = env.single_observation_space, env.single_action_space
    storage = RolloutStorage(cfg.num_steps, num_envs, obs_space.shape, obs_space.dtype, act_space.shape,
                             torch.int64, device)
    state = {"obs": storage.to_device(env.reset(seed=cfg.seed)[0]),
             "valid": torch.ones(num_envs, dtype=torch.bool, device=device)}

    spent = {"rollout": 0.0, "update": 0.0}

    def cycle(update_i: int) -> None:
        t0 = time.perf_counter()
        frac = 1.0 - update_i / cycles
        for group in optimizer.param_groups:
            group["lr"] = cfg.learning_rate * frac
        state["obs"], state["valid"] = ppo.collect(agent, env, storage, state["obs"], state["valid"],
                                                   lambda t, ret, length: None, act)
        sync(device)
        t1 = time.perf_counter()
        batch = ppo.training_batch(agent, storage, state["obs"], cfg)
        stats = ppo.update(agent, optimizer, amp, batch, cfg.clip_coef, cfg, world, generator, loss_fn)
        # what train() reads back for its log line each update
        ppo.log_values(stats, batch)
        sync(device)
        if update_i > 0:  # the warm-up cycle is not counted
            spent["rollout"] += t1 - t0
            spent["update"] += time.perf_counter() - t1

    seconds = timed(cycle, args.updates, device)
    env.close()
    return args.updates * NUM_STEPS * num_envs / seconds, spent["rollout"], spent["update"]


def run_env(num_envs: int, args) -> float:
    env = envs.make("Breakout", num_envs, sticky_actions=0.25)
    env.reset(seed=1)
    rng = np.random.default_rng(0)

    def cycle(_):
        for _ in range(NUM_STEPS):
            env.step(rng.integers(0, 4, size=num_envs))

    seconds = timed(cycle, args.updates, torch.device("cpu"))
    env.close()
    return args.updates * NUM_STEPS * num_envs / seconds


# ------------------------------------------------------------------------------------------------
# whole commands: our trainer and CleanRL's script
# ------------------------------------------------------------------------------------------------


def ours_command(args, extra: tuple[str, ...] = ()) -> tuple[float, float]:
    total = 8 * NUM_STEPS * (args.updates + 1)
    with tempfile.TemporaryDirectory() as logdir:
        sps, whole, _ = timed_command(
            [sys.executable, "-m", "agents.ppo", "--env", "Breakout", "--num-envs", "8", "--total-timesteps",
             str(total), "--eval-interval", "0", "--checkpoint-interval", "0", "--device", args.device,
             "--logdir", logdir, *extra], " ".join(["agents.ppo", *extra]))
    return sps, whole


def cleanrl_command(args) -> tuple[float, float, float, float]:
    total = 8 * NUM_STEPS * (args.updates + 1)
    sps, whole, text = timed_command(
        [sys.executable, str(ROOT / "bench" / "cleanrl_ppo.py"), "--num-envs", "8", "--total-timesteps",
         str(total), "--device", args.device], "cleanrl_ppo.py")
    split = re.search(r"rollout_s=([0-9.]+) update_s=([0-9.]+)", text)
    return sps, whole, float(split.group(1)), float(split.group(2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--updates", type=int, default=3, help="timed rollout+update cycles per measurement")
    parser.add_argument("--envs", type=int, nargs="+", default=[8, 32], help="env counts for ours and env alone")
    parser.add_argument("--device", default="cpu", help="auto, cpu or cuda")
    parser.add_argument("--compile", action="store_true", help="also time ours with --compile: the whole command "
                        "(its compilation included) and the in-process cycles (after the warm-up that compiles)")
    parser.add_argument("--bf16", action="store_true", help="also time our whole command with --amp bf16")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads in this process "
                        "(default: torch's; the whole commands use their own defaults)")
    args = parser.parse_args()
    if args.updates < 1:
        parser.error("--updates must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = devices.pick(args.device)
    print(f"device {device}, torch threads {torch.get_num_threads()}, {args.updates} timed cycles of "
          f"{NUM_STEPS} steps per env each (after one warm-up)")
    results: dict[str, float] = {}
    sps, whole = ours_command(args)
    results.update(ours8=sps, whole_ours=whole)
    print(f"ours     command   8 envs  {sps:8.1f} steps/s  whole {whole:6.1f} s", flush=True)
    sps, whole, rollout_s, update_s = cleanrl_command(args)
    results.update(cleanrl8=sps, whole_cleanrl=whole, rollout_cleanrl8=rollout_s, update_cleanrl8=update_s)
    print(f"cleanrl  command   8 envs  {sps:8.1f} steps/s  whole {whole:6.1f} s  (rollouts {rollout_s:.1f} s, "
          f"updates {update_s:.1f} s, all {args.updates + 1} iterations)", flush=True)
    results["ratio8"] = results["ours8"] / results["cleanrl8"]
    if args.compile:
        sps, whole = ours_command(args, ("--compile",))
        results.update(compiled8=sps, whole_compiled=whole)
        print(f"compiled command   8 envs  {sps:8.1f} steps/s  whole {whole:6.1f} s", flush=True)
    if args.bf16:
        sps, whole = ours_command(args, ("--amp", "bf16"))
        results.update(bf16_8=sps, whole_bf16=whole, ratio_bf16=sps / results["cleanrl8"])
        print(f"bf16     command   8 envs  {sps:8.1f} steps/s  whole {whole:6.1f} s", flush=True)
    for name, compile_ in (("ours", False), ("compiled", True))[:1 + args.compile]:
        for n in args.envs:
            sps, rollout_s, update_s = run_ours(n, args, device, compile_)
            results.update({f"inproc_{name}{n}": sps, f"rollout_{name}{n}": rollout_s, f"update_{name}{n}": update_s})
            print(f"{name:<8} in-proc {n:3d} envs  {sps:8.1f} steps/s  (rollouts {rollout_s:.1f} s, updates "
                  f"{update_s:.1f} s, {args.updates} cycles)", flush=True)
    for n in args.envs:
        results[f"env{n}"] = run_env(n, args)
        print(f"env      in-proc {n:3d} envs  {results[f'env{n}']:8.1f} steps/s  (random actions)", flush=True)
    print("ppo_sps " + " ".join(f"{k}={v:.2f}" if k.startswith("ratio") else f"{k}={v:.1f}"
                                for k, v in results.items()))


if __name__ == "__main__":
    main()

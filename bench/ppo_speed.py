"""PPO environment steps per second on Breakout, training loop and env alone, ours beside a CleanRL-style loop.

    python bench/ppo_speed.py [--updates 3] [--envs 8 32] [--device auto] [--threads T]

Three measurements, each a warm-up rollout (+ update) and then --updates timed cycles of 128 steps per env:
- ours: agents.ppo's training loop as train() runs it, minus the run folder and TensorBoard: ale-py's C++
  vector env (envs.make), RolloutStorage on the device, gae, agents.ppo.update on agents.ppo.Agent (the
  channels-last Nature CNN) with the atari preset (4 epochs x 4 minibatches, Adam eps 1e-5, clip 0.5),
  including the per-update host syncs train() makes for its log line.
- env: the same vector env stepped with random actions, no network.
- cleanrl: cleanrl/ppo_atari.py's loop: gymnasium's AtariPreprocessing + FrameStackObservation in a
  SyncVectorEnv (no life-loss terminal), float32 rollout buffers, the same network in NCHW layout,
  plain mean losses, torch.optim.Adam(eps=1e-5), nn.utils.clip_grad_norm_, its per-minibatch .item()s.
Last line: `ppo_sps ours8=.. ours32=.. env8=.. env32=.. cleanrl8=.. ratio8=..` (ratio8 = ours8 / cleanrl8).
"""
from __future__ import annotations

import argparse
import time

import ale_py
import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical

import envs
from agents import ppo
from agents.rollout import RolloutStorage
from common import device as devices, distributed
from common.seeding import seed_everything

gym.register_envs(ale_py)

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


def run_ours(num_envs: int, args, device: torch.device) -> float:
    cycles = args.updates + 1
    cfg = ppo.prepare(ppo.Config(env="Breakout", num_envs=num_envs, device=str(device),
                                 total_timesteps=num_envs * NUM_STEPS * cycles))
    world = distributed.World()
    seed_everything(cfg.seed)
    env = ppo.make_env(cfg, num_envs)
    agent = ppo.make_agent(cfg, env, device)
    optimizer = ppo.make_optimizer(cfg, agent.parameters())
    generator = torch.Generator().manual_seed(cfg.seed)
    obs_space, act_space = env.single_observation_space, env.single_action_space
    storage = RolloutStorage(cfg.num_steps, num_envs, obs_space.shape, obs_space.dtype, act_space.shape,
                             torch.int64, device)
    state = {"obs": storage.to_device(env.reset(seed=cfg.seed)[0]),
             "valid": torch.ones(num_envs, dtype=torch.bool, device=device)}

    def cycle(update_i: int) -> None:
        frac = 1.0 - update_i / cycles
        for group in optimizer.param_groups:
            group["lr"] = cfg.learning_rate * frac
        state["obs"], state["valid"] = ppo.collect(agent, env, storage, state["obs"], state["valid"],
                                                   lambda t, ret, length: None)
        batch = ppo.training_batch(agent, storage, state["obs"], cfg)
        stats = ppo.update(agent, optimizer, batch, cfg.clip_coef, cfg, world, generator)
        # what train() reads back for its log line each update
        ppo.log_values(stats, batch)

    seconds = timed(cycle, args.updates, device)
    env.close()
    return args.updates * NUM_STEPS * num_envs / seconds


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
# cleanrl: ppo_atari.py's loop on gymnasium's wrappers
# ------------------------------------------------------------------------------------------------


def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias_const)
    return layer


class CleanRLAgent(nn.Module):
    def __init__(self, num_actions: int):
        super().__init__()
        self.network = nn.Sequential(
            layer_init(nn.Conv2d(4, 32, 8, stride=4)), nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 4, stride=2)), nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, stride=1)), nn.ReLU(),
            nn.Flatten(), layer_init(nn.Linear(64 * 7 * 7, 512)), nn.ReLU(),
        )
        self.actor = layer_init(nn.Linear(512, num_actions), std=0.01)
        self.critic = layer_init(nn.Linear(512, 1), std=1)

    def get_value(self, x):
        return self.critic(self.network(x / 255.0))

    def get_action_and_value(self, x, action=None):
        hidden = self.network(x / 255.0)
        probs = Categorical(logits=self.actor(hidden))
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action), probs.entropy(), self.critic(hidden)


def make_gym_env():
    env = gym.make("ALE/Breakout-v5", frameskip=1, repeat_action_probability=0.25)
    env = gym.wrappers.RecordEpisodeStatistics(env)
    env = gym.wrappers.AtariPreprocessing(env, frame_skip=4, noop_max=30, terminal_on_life_loss=False)
    env = gym.wrappers.TransformReward(env, np.sign)  # CleanRL's ClipRewardEnv
    return gym.wrappers.FrameStackObservation(env, 4)


def run_cleanrl(num_envs: int, args, device: torch.device) -> float:
    c = ppo.prepare(ppo.Config(env="Breakout", num_envs=num_envs))  # the same hyper-parameters
    cycles = args.updates + 1
    batch_size = num_envs * NUM_STEPS
    minibatch_size = batch_size // c.num_minibatches
    seed_everything(c.seed)
    vec = gym.vector.SyncVectorEnv([make_gym_env for _ in range(num_envs)])
    agent = CleanRLAgent(vec.single_action_space.n).to(device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=c.learning_rate, eps=1e-5)
    obs_shape = vec.single_observation_space.shape
    obs = torch.zeros((NUM_STEPS, num_envs) + obs_shape).to(device)
    actions = torch.zeros((NUM_STEPS, num_envs)).to(device)
    logprobs = torch.zeros((NUM_STEPS, num_envs)).to(device)
    rewards = torch.zeros((NUM_STEPS, num_envs)).to(device)
    dones = torch.zeros((NUM_STEPS, num_envs)).to(device)
    values = torch.zeros((NUM_STEPS, num_envs)).to(device)
    next_obs, _ = vec.reset(seed=c.seed)
    state = {"obs": torch.Tensor(next_obs).to(device), "done": torch.zeros(num_envs).to(device)}

    def cycle(iteration: int) -> None:
        optimizer.param_groups[0]["lr"] = (1.0 - iteration / cycles) * c.learning_rate
        next_obs, next_done = state["obs"], state["done"]
        for step in range(NUM_STEPS):
            obs[step] = next_obs
            dones[step] = next_done
            with torch.no_grad():
                action, logprob, _, value = agent.get_action_and_value(next_obs)
                values[step] = value.flatten()
            actions[step] = action
            logprobs[step] = logprob
            next_obs, reward, terminations, truncations, infos = vec.step(action.cpu().numpy())
            next_done = np.logical_or(terminations, truncations)
            rewards[step] = torch.tensor(reward).to(device).view(-1)
            next_obs, next_done = torch.Tensor(next_obs).to(device), torch.Tensor(next_done).to(device)
        state["obs"], state["done"] = next_obs, next_done

        with torch.no_grad():
            next_value = agent.get_value(next_obs).reshape(1, -1)
            advantages = torch.zeros_like(rewards).to(device)
            lastgaelam = 0
            for t in reversed(range(NUM_STEPS)):
                if t == NUM_STEPS - 1:
                    nextnonterminal = 1.0 - next_done
                    nextvalues = next_value
                else:
                    nextnonterminal = 1.0 - dones[t + 1]
                    nextvalues = values[t + 1]
                delta = rewards[t] + c.gamma * nextvalues * nextnonterminal - values[t]
                advantages[t] = lastgaelam = delta + c.gamma * c.gae_lambda * nextnonterminal * lastgaelam
            returns = advantages + values

        b_obs = obs.reshape((-1,) + obs_shape)
        b_logprobs, b_actions = logprobs.reshape(-1), actions.reshape(-1)
        b_advantages, b_returns, b_values = advantages.reshape(-1), returns.reshape(-1), values.reshape(-1)
        b_inds = np.arange(batch_size)
        clipfracs = []
        for _ in range(c.update_epochs):
            np.random.shuffle(b_inds)
            for start in range(0, batch_size, minibatch_size):
                mb_inds = b_inds[start:start + minibatch_size]
                _, newlogprob, entropy, newvalue = agent.get_action_and_value(b_obs[mb_inds], b_actions.long()[mb_inds])
                logratio = newlogprob - b_logprobs[mb_inds]
                ratio = logratio.exp()
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - logratio).mean()
                    clipfracs += [((ratio - 1.0).abs() > c.clip_coef).float().mean().item()]
                mb_advantages = b_advantages[mb_inds]
                mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)
                pg_loss = torch.max(-mb_advantages * ratio,
                                    -mb_advantages * torch.clamp(ratio, 1 - c.clip_coef, 1 + c.clip_coef)).mean()
                newvalue = newvalue.view(-1)
                v_loss_unclipped = (newvalue - b_returns[mb_inds]) ** 2
                v_clipped = b_values[mb_inds] + torch.clamp(newvalue - b_values[mb_inds], -c.clip_coef, c.clip_coef)
                v_loss = 0.5 * torch.max(v_loss_unclipped, (v_clipped - b_returns[mb_inds]) ** 2).mean()
                entropy_loss = entropy.mean()
                loss = pg_loss - c.ent_coef * entropy_loss + v_loss * c.vf_coef
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), c.max_grad_norm)
                optimizer.step()
        # what CleanRL logs each iteration
        y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
        var_y = np.var(y_true)
        _ = [v_loss.item(), pg_loss.item(), entropy_loss.item(), approx_kl.item(), np.mean(clipfracs),
             np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y]

    seconds = timed(cycle, args.updates, device)
    vec.close()
    return args.updates * NUM_STEPS * num_envs / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--updates", type=int, default=3, help="timed rollout+update cycles per measurement")
    parser.add_argument("--envs", type=int, nargs="+", default=[8, 32], help="env counts for ours and env alone")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.updates < 1:
        parser.error("--updates must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = devices.pick(args.device)
    print(f"device {device}, torch threads {torch.get_num_threads()}, {args.updates} timed cycles of "
          f"{NUM_STEPS} steps per env each (after one warm-up)")
    results: dict[str, float] = {}
    for n in args.envs:
        results[f"ours{n}"] = run_ours(n, args, device)
        print(f"ours     {n:3d} envs  {results[f'ours{n}']:8.1f} steps/s  (rollout + update)", flush=True)
    for n in args.envs:
        results[f"env{n}"] = run_env(n, args)
        print(f"env      {n:3d} envs  {results[f'env{n}']:8.1f} steps/s  (random actions)", flush=True)
    results["cleanrl8"] = run_cleanrl(8, args, device)
    print(f"cleanrl    8 envs  {results['cleanrl8']:8.1f} steps/s  (rollout + update)", flush=True)
    if "ours8" in results:
        results["ratio8"] = results["ours8"] / results["cleanrl8"]
    print("ppo_sps " + " ".join(f"{k}={v:.2f}" if k.startswith("ratio") else f"{k}={v:.1f}"
                                for k, v in results.items()))


if __name__ == "__main__":
    main()

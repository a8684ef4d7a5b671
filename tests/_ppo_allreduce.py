"""Run by tests/test_ppo.py under `torchrun --nproc_per_node=2`: one PPO minibatch gradient, split over
two gloo ranks and summed by the all-reduce, against the gradient one process computes over both
ranks' samples together. Rank 0 writes the largest difference to the file named by argv[1]."""
import sys

import gymnasium as gym
import torch

from agents import ppo
from common import distributed

world = distributed.init("cpu")
cfg = ppo.prepare(ppo.Config(env="CartPole-v1", clip_vloss=True, ent_coef=0.01))
space = gym.spaces.Discrete(2)


def agent_and_batch():
    torch.manual_seed(0)
    agent = ppo.Agent((4,), space, (16, 16))
    n = 64
    batch = {"obs": torch.randn(n, 4), "actions": torch.randint(0, 2, (n,)), "logprobs": -torch.rand(n),
             "values": torch.randn(n), "advantages": torch.randn(n) * 3 + 1, "returns": torch.randn(n),
             "valid": torch.rand(n) > 0.2}
    return agent, batch


agent, batch = agent_and_batch()
half = {k: v[world.rank * 32:(world.rank + 1) * 32] for k, v in batch.items()}
loss, _ = ppo.ppo_loss(agent, half, 0.2, cfg, *ppo.minibatch_statistics(half, world))
loss.backward()
world.sum_grads_(agent.parameters())

if world.rank == 0:
    alone, full = agent_and_batch()
    loss, _ = ppo.ppo_loss(alone, full, 0.2, cfg, *ppo.minibatch_statistics(full, distributed.World()))
    loss.backward()
    diff = max((a.grad - b.grad).abs().max().item() for a, b in zip(agent.parameters(), alone.parameters()))
    scale = max(b.grad.abs().max().item() for b in alone.parameters())
    with open(sys.argv[1], "w") as f:
        f.write(f"{diff} {scale}\n")
world.close()

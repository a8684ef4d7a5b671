"""Run plumbing shared by agents and GAN trainers: CLI, run folder, logging, checkpoints, device, seeds.

Depends on torch, tensorboard, tyro and tqdm only; never on agents, gans or envs.
"""

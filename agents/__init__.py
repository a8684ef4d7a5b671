"""RL agents, one module per algorithm (dqn, ...), and the parts several of them share
(replay memory, networks). Depends on envs, optim and common."""

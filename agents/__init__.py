"""RL agents, one module per algorithm (dqn, ...), and the parts several of them share
(replay memory, networks). Depends on envs, optim and common.

`agents.load(path)` is a checkpoint's policy, whichever agent wrote it (agents.policy)."""


def load(path, device: str = "auto"):
    """The policy in an agent's checkpoint: `.act(obs)` and `.make_env()` (agents.policy.Policy)."""
    from agents.policy import load as load_policy

    return load_policy(path, device)

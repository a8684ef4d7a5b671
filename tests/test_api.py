"""The Python API: train from a config built in code (README's example, run here as written there), load any
agent's checkpoint as a policy that acts on its env's observations, single or batched, with exploration off,
resume from Python, and a DCGAN generator that samples."""
import re
from pathlib import Path

import numpy as np
import pytest

import agents
import gans
from agents import dqn, ppo, rainbow, sac
from common.errors import UserError
from gans import dcgan


def readme_example() -> str:
    """The Python block of README's "Python API" section."""
    text = (Path(__file__).parent.parent / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_trains_loads_and_acts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the example writes under runs/, as a user's would
    scope: dict = {}
    exec(compile(readme_example(), "README.md", "exec"), scope)  # noqa: S102 (our own README's example)
    result, policy = scope["result"], scope["policy"]
    assert result.checkpoint == result.folder / "final.pt" and result.checkpoint.is_file()
    assert result.folder.parent == tmp_path / "runs" and result.folder.is_absolute()
    assert result.final_eval == result.evaluations[-1][1] and [s for s, _ in result.evaluations] == [2_500, 5_000]
    assert policy.kind == "dqn" and policy.observation_shape == (4,)


def check_policy(policy, action_space_type):
    env = policy.make_env(3)
    try:
        obs, _ = env.reset(seed=0)
        batch = policy.act(obs)
        assert len(batch) == 3 and all(env.single_action_space.contains(a) for a in batch)
        one = policy.act(obs[1])
        np.testing.assert_allclose(one, batch[1], rtol=1e-5, atol=1e-6)  # single and batched agree
        np.testing.assert_array_equal(policy.act(obs), batch)  # exploration off: the same actions again
        assert isinstance(env.single_action_space, action_space_type)
        obs, *_ = env.step(batch)  # they are actions the env takes
        with pytest.raises(ValueError, match="observations of shape"):
            policy.act(np.zeros((2, 99), dtype=np.float32))
    finally:
        env.close()


def test_every_agent_trains_from_python_and_loads_as_a_policy(tmp_path):
    import gymnasium as gym

    runs = {
        "rainbow": rainbow.train(rainbow.Config(env="CartPole-v1", total_timesteps=600, learning_starts=200,
                                                eval_interval=0, logdir=str(tmp_path))),
        "ppo": ppo.train(ppo.Config(env="InvertedPendulum-v5", num_envs=2, num_steps=64, total_timesteps=256,
                                    eval_interval=0, logdir=str(tmp_path))),
        "sac": sac.train(sac.Config(env="Pendulum-v1", optimizer="adam", total_timesteps=300, learning_starts=100,
                                    eval_interval=300, eval_episodes=1, logdir=str(tmp_path))),
    }
    assert runs["rainbow"].final_eval is None and runs["rainbow"].evaluations == []  # evaluation off
    assert len(runs["sac"].evaluations) == 1 and runs["sac"].evaluations[0][0] == 300
    spaces = {"rainbow": gym.spaces.Discrete, "ppo": gym.spaces.Box, "sac": gym.spaces.Box}
    for kind, result in runs.items():
        policy = agents.load(result.checkpoint, device="cpu")
        assert policy.kind == kind and policy.config.env == result.checkpoint.parent.name.split("__")[0]
        check_policy(policy, spaces[kind])
    # PPO's env normalizes observations with the checkpoint's statistics, frozen
    env = agents.load(runs["ppo"].checkpoint).make_env()
    wrapper = env
    while not hasattr(wrapper, "update_running_mean") and hasattr(wrapper, "env"):
        wrapper = wrapper.env
    if hasattr(wrapper, "update_running_mean"):
        assert wrapper.update_running_mean is False
    env.close()


def test_resume_from_python_and_refusals(tmp_path):
    first = dqn.train(dqn.Config(env="CartPole-v1", total_timesteps=600, learning_starts=200, eval_interval=0,
                                 logdir=str(tmp_path)))
    more = dqn.train(dqn.Config(resume=str(first.folder / "checkpoint.pt"), total_timesteps=900))
    assert more.folder == first.folder  # it goes on in its own folder, with its config
    import torch

    assert torch.load(more.checkpoint, weights_only=True)["global_step"] == 900
    with pytest.raises(UserError, match="--optimizer cannot change"):
        dqn.train(dqn.Config(resume=str(more.checkpoint), total_timesteps=1200, optimizer="sgd"))
    with pytest.raises(UserError, match="--total-timesteps must be positive"):
        dqn.train(dqn.Config(env="CartPole-v1", total_timesteps=0, logdir=str(tmp_path)))
    with pytest.raises(UserError, match="agents.load"):
        dqn.train(dqn.Config(eval=str(more.checkpoint)))
    with pytest.raises(UserError, match="checkpoint not found"):
        agents.load(tmp_path / "nothing.pt")


def test_generator_loads_and_samples(tmp_path):
    result = dcgan.train(dcgan.Config(dataset="ring8", steps=20, logdir=str(tmp_path)))
    assert result.checkpoint.is_file() and "modes" in result.metrics
    generator = gans.load(result.checkpoint, device="cpu")
    points = generator.sample(16, seed=3)
    assert points.shape == (16, 2) and bool(points.isfinite().all())
    assert (generator.sample(16, seed=3) == points).all()
    with pytest.raises(UserError, match="not an agent's"):
        agents.load(result.checkpoint)

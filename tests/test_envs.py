"""Environment names and the Atari semantics: life loss is terminal for the learner, scores are full games."""
import numpy as np
import pytest

import envs


@pytest.mark.parametrize("name, expected", [
    ("Breakout", "ALE/Breakout-v5"), ("ALE/Breakout-v5", "ALE/Breakout-v5"),
    ("BreakoutNoFrameskip-v4", "ALE/Breakout-v5"), ("Breakout-v5", "ALE/Breakout-v5"),
    ("SpaceInvaders", "ALE/SpaceInvaders-v5"), ("MsPacman", "ALE/MsPacman-v5"),
    ("CartPole-v1", "CartPole-v1"), ("HalfCheetah-v5", "HalfCheetah-v5"), ("HalfCheetah", "HalfCheetah-v5"),
])
def test_resolve(name, expected):
    assert envs.resolve(name).id == expected


def test_unknown_name_suggests_close_ones():
    with pytest.raises(envs.UnknownEnvError, match="Breakout"):
        envs.resolve("Breakot")


def test_atari_life_loss_terminates_but_scores_full_games():
    env = envs.make("Breakout", num_envs=1, sticky_actions=0.0)
    assert env.single_observation_space.shape == (4, 84, 84)
    rng = np.random.default_rng(0)
    obs, info = env.reset(seed=0)
    assert (obs[0, :3] == 0).all() and obs[0, 3].any()  # zero-filled stack at reset
    terminations, clipped_sum, step = 0, 0.0, 0
    while True:
        obs, reward, terminated, truncated, info = env.step(rng.integers(0, 4, size=1))
        step += 1
        assert set(np.unique(reward)) <= {-1.0, 0.0, 1.0}
        terminations += int(terminated[0])
        clipped_sum += float(reward[0])
        if info["episode_end"][0]:
            break
        assert not info["_episode"][0]
    # Breakout has 5 lives: the learner saw 5 terminal states, the report one 5-life game.
    assert terminations == 5 and not truncated[0]
    assert info["_episode"][0] and info["episode"]["l"][0] == step
    assert info["episode"]["r"][0] >= clipped_sum
    # The step after game over is the autoreset: a zero-padded new stack, no reward, new counts.
    obs, reward, terminated, truncated, info = env.step(np.array([0]))
    assert (obs[0, :3] == 0).all() and reward[0] == 0 and not info["episode_end"][0]


def test_truncation_at_the_frame_cap():
    env = envs.make("Breakout", num_envs=1, max_frames=200, sticky_actions=0.0)
    env.reset(seed=0)
    for step in range(1, 100):
        obs, reward, terminated, truncated, info = env.step(np.array([1]))
        if truncated[0]:
            break
    assert truncated[0] and info["episode_end"][0] and info["_episode"][0]
    assert step == 50  # 200 frames at 4 a step (the no-op start's frames come on top)


def test_reported_scores_are_raw_while_the_learner_gets_clipped_rewards():
    # Space Invaders pays 5 to 30 points an invader: a random game's score is far above its clipped sum.
    env = envs.make("SpaceInvaders", num_envs=1, sticky_actions=0.0)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    clipped_sum = 0.0
    while True:
        _, reward, _, _, info = env.step(rng.integers(0, env.single_action_space.n, size=1))
        clipped_sum += float(reward[0])
        if info["_episode"][0]:
            break
    assert clipped_sum > 0 and info["episode"]["r"][0] >= 5 * clipped_sum

"""A user's own env: `--env module:EnvId` (the module registers it) for the trainers, `--env-kwargs` typed and saved
with the run and fixed on resume, and one-line errors for what cannot work."""
import json

import pytest

import agents
from agents import dqn, sac
from common.errors import UserError

CORRIDOR, TARGET = "user_envs:Corridor-v0", "user_envs:Target-v0"


def test_discrete_user_env_with_kwargs_trains_saves_and_resumes(tmp_path, capsys):
    args = ["--env", CORRIDOR, "--env-kwargs", "length=4", "--total-timesteps", "600", "--learning-starts", "100",
            "--eval-interval", "600", "--eval-episodes", "2", "--logdir", str(tmp_path)]
    dqn.main(args)
    run = next(tmp_path.iterdir())
    assert run.name.startswith("Corridor-v0__dqn__1__")
    config = json.loads((run / "config.json").read_text())
    assert config["env"] == CORRIDOR and config["env_kwargs"] == ["length=4"]
    policy = agents.load(run / "final.pt")
    assert policy.observation_shape == (4,)  # the kwarg reached the env's constructor
    env = policy.make_env()
    assert env.single_observation_space.shape == (4,)
    env.close()
    # a resumed run keeps them: another length would not fit the network
    with pytest.raises(SystemExit) as e:
        dqn.main(["--resume", str(run / "checkpoint.pt"), "--total-timesteps", "900", "--env-kwargs", "length=6"])
    assert e.value.code == 2 and "--env-kwargs cannot change" in capsys.readouterr().err


def test_box_user_env_trains_from_python(tmp_path):
    result = sac.train(sac.Config(env=TARGET, env_kwargs=("goal=-0.25",), optimizer="adam", total_timesteps=300,
                                  learning_starts=100, eval_interval=300, eval_episodes=1, logdir=str(tmp_path)))
    assert result.final_eval is not None and result.final_eval <= 0  # the env's own rewards, distances
    env = agents.load(result.checkpoint).make_env()
    obs, _ = env.reset(seed=0)
    assert obs[0, 1] == pytest.approx(-0.25)  # goal -0.25, typed as text, read as a float
    env.close()


def test_a_users_wrapper_is_applied_saved_and_rebuilt(tmp_path):
    result = sac.train(sac.Config(env=TARGET, env_wrappers=("user_envs:WithDistance",), optimizer="adam",
                                  total_timesteps=200, learning_starts=100, eval_interval=0, logdir=str(tmp_path)))
    policy = agents.load(result.folder)  # the run folder: its final.pt
    assert policy.observation_shape == (3,)  # the wrapper's observation, rebuilt from the saved config
    env = policy.make_env()
    obs, _ = env.reset(seed=0)
    assert obs[0, 2] == pytest.approx(abs(obs[0, 0] - obs[0, 1]), abs=1e-6)
    env.close()


@pytest.mark.parametrize("env, kwargs, message", [
    ("no_such_module:Corridor-v0", [], "cannot import module 'no_such_module' (ModuleNotFoundError"),
    ("user_envs:Corridr-v0", [], "registered no env 'Corridr-v0'"),
    ("user_envs:", [], "write a user env as module:EnvId"),
    (TARGET, [], "DQN needs discrete actions"),
    (CORRIDOR, ["length"], "write KEY=VALUE"),
    (CORRIDOR, ["width=3"], "cannot make user_envs:Corridor-v0"),
    ("Breakout", ["mode=1"], "env kwargs and wrappers apply to other envs only"),
])
def test_user_env_errors_are_one_line(tmp_path, capsys, env, kwargs, message):
    args = ["--env", env, "--total-timesteps", "300", "--logdir", str(tmp_path)]
    with pytest.raises(SystemExit) as e:
        dqn.main(args + (["--env-kwargs", *kwargs] if kwargs else []))
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) <= 2
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("wrapper, message", [
    ("user_envs:NoSuchWrapper", "cannot import it (AttributeError"), ("user_envs", "write module:callable"),
    ("user_envs:Corridor.metadata", "not a callable"), ("nowhere:Wrap", "ModuleNotFoundError")])
def test_wrapper_errors_are_one_line(tmp_path, capsys, wrapper, message):
    with pytest.raises(SystemExit) as e:
        sac.main(["--env", TARGET, "--env-wrappers", wrapper, "--total-timesteps", "300", "--logdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and "Traceback" not in err and not any(tmp_path.iterdir())


def test_python_api_raises_the_same_errors(tmp_path):
    with pytest.raises(UserError, match="registered no env"):
        dqn.train(dqn.Config(env="user_envs:Nothing-v0", logdir=str(tmp_path)))

"""DQN: learns CartPole, logs and checkpoints Breakout, resumes, evaluates, and fails cleanly on bad input."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from agents import dqn
from common.events import read_scalars, scalar_tags

# Tuned for CartPole (RMSpropTF with a small epsilon; Nature's 0.01 suits Atari's large TD errors).
CARTPOLE = ["--env", "CartPole-v1", "--seed", "1", "--total-timesteps", "50000", "--learning-starts", "1000",
            "--buffer-size", "50000", "--train-frequency", "2", "--batch-size", "64",
            "--target-network-frequency", "500", "--exploration-steps", "10000", "--end-e", "0.02",
            "--learning-rate", "5e-4", "--rmsprop-eps", "1e-5", "--checkpoint-interval", "0"]


def only_run(logdir: Path) -> Path:
    runs = [p for p in logdir.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "agents.dqn", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=Path(__file__).parent.parent)


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("cartpole")
    dqn.main([*CARTPOLE, "--logdir", str(logdir)])
    return only_run(logdir)


def test_dqn_learns_cartpole(cartpole_run):
    events = read_scalars(cartpole_run, "charts/episodic_return")
    returns = np.array([v for _, _, v in events])
    assert events[-1][1] <= 50_000
    assert returns[:10].mean() < 50  # it started from a random policy
    # CartPole-v0's criterion, "solved" at a mean of 195, here over 10 consecutive episodes reached
    # within 50k steps. DQN's return oscillates after that, so the best window is what is asserted.
    best10 = np.convolve(returns, np.ones(10) / 10, mode="valid").max()
    assert best10 >= 195, f"best mean return over 10 consecutive episodes {best10:.1f} < 195"


def test_eval_plays_full_episodes_and_records_video(cartpole_run):
    out = cli("--eval", str(cartpole_run / "final.pt"), "--eval-episodes", "2", "--capture-video")
    assert out.returncode == 0, out.stderr
    assert "2 episodes, score" in out.stdout
    videos = list((cartpole_run / "videos").glob("*.mp4"))
    assert videos and videos[0].stat().st_size > 1000


BREAKOUT = ["--env", "Breakout", "--buffer-size", "1000", "--learning-starts", "500", "--batch-size", "8",
            "--checkpoint-interval", "1000", "--log-interval", "250", "--target-network-frequency", "500"]
TAGS = ["charts/episodic_return", "charts/episodic_length", "charts/SPS", "charts/epsilon",
        "charts/learning_rate", "losses/td_loss", "losses/q_values", "losses/grad_norm"]


def test_breakout_logs_checkpoints_and_resumes(tmp_path):
    dqn.main([*BREAKOUT, "--total-timesteps", "2000", "--logdir", str(tmp_path)])
    run = only_run(tmp_path)
    assert run.name.startswith("ALE_Breakout-v5__dqn__1__")
    assert set(TAGS) <= set(scalar_tags(run))
    saved = torch.load(run / "checkpoint.pt", weights_only=True)
    assert saved["global_step"] == 2000
    # Full games (5 lives) are reported, not lives: a random Breakout game lasts well over 50 steps.
    lengths = [v for _, _, v in read_scalars(run, "charts/episodic_length")]
    assert min(lengths) > 50

    dqn.main(["--resume", str(run / "checkpoint.pt"), "--total-timesteps", "3000"])
    assert only_run(tmp_path) == run  # same folder, same curves
    steps = [s for _, s, _ in read_scalars(run, "losses/td_loss")]
    assert steps[-1] == 3000 and len(steps) == len(set(steps))  # continued, not restarted at 0
    resumed = torch.load(run / "final.pt", weights_only=True)
    assert resumed["global_step"] == 3000
    assert not torch.equal(resumed["q_net"]["head.weight"], saved["q_net"]["head.weight"])
    # The optimizer's state came back too: its step count went on from the first run's.
    first_state = next(iter(saved["optimizer"]["state"].values()))["step"]
    later_state = next(iter(resumed["optimizer"]["state"].values()))["step"]
    assert later_state > first_state


def test_sigterm_saves_a_checkpoint(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "agents.dqn", "--env", "CartPole-v1", "--total-timesteps",
                             "10000000", "--learning-starts", "100", "--buffer-size", "1000",
                             "--logdir", str(tmp_path)], cwd=Path(__file__).parent.parent,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("*/config.json")):
            assert proc.poll() is None and time.monotonic() < deadline, "training did not start"
            time.sleep(0.2)
        time.sleep(3)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by signal" in err and "Traceback" not in err
    saved = torch.load(only_run(tmp_path) / "checkpoint.pt", weights_only=True)
    assert 0 < saved["global_step"] < 10_000_000


def assert_one_line_error(out, *words):
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_unknown_env(tmp_path):
    assert_one_line_error(cli("--env", "Breakot", "--logdir", str(tmp_path)), "Breakot", "Breakout")


def test_negative_learning_rate(tmp_path):
    assert_one_line_error(cli("--env", "CartPole-v1", "--learning-rate=-1", "--logdir", str(tmp_path)),
                          "--learning-rate")


def test_buffer_smaller_than_batch(tmp_path):
    assert_one_line_error(cli("--env", "CartPole-v1", "--buffer-size", "16", "--batch-size", "32",
                              "--logdir", str(tmp_path)), "--buffer-size")


@pytest.mark.parametrize("content", [b"not a checkpoint at all", b"PK\x03\x04truncated zip"])
def test_corrupt_checkpoint(tmp_path, content):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(content)
    assert_one_line_error(cli("--resume", str(bad)), str(bad))
    assert_one_line_error(cli("--eval", str(bad)), str(bad))


def test_resume_refuses_what_the_checkpoint_cannot_continue(tmp_path):
    dqn.main(["--env", "CartPole-v1", "--total-timesteps", "300", "--learning-starts", "100",
              "--buffer-size", "500", "--logdir", str(tmp_path)])
    final = only_run(tmp_path) / "final.pt"
    assert_one_line_error(cli("--resume", str(final), "--env", "Acrobot-v1"), "--env")
    assert_one_line_error(cli("--resume", str(final), "--optimizer", "adam"), "--optimizer")
    assert_one_line_error(cli("--resume", str(final)), "already at step 300")


def test_unsupported_observations(tmp_path):
    assert_one_line_error(cli("--env", "FrozenLake-v1", "--logdir", str(tmp_path)), "FrozenLake-v1")


def test_foreign_checkpoint(tmp_path):
    foreign = tmp_path / "model.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    assert_one_line_error(cli("--resume", str(foreign)), "not a checkpoint")

"""PPO: GAE against hand-computed numbers, learning CartPole and InvertedPendulum (final checkpoints
evaluated), the all-reduce across two torchrun processes, Atari logging, checkpoints and resume."""
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from agents import ppo
from agents.rollout import gae
from common.events import read_scalars, scalar_tags

ROOT = Path(__file__).parent.parent


def only_run(logdir: Path) -> Path:
    runs = [p for p in logdir.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def test_gae_by_hand():
    """Env 0: a termination at t=1, the autoreset step t=2, a truncation at t=4 (bootstrapped from the
    final observation's value). Env 1: a lost life at t=1 (terminated, no episode end). gamma 0.9,
    lambda 0.8, so gamma * lambda = 0.72."""
    rewards = torch.tensor([[1.0, 1.0], [2.0, 1.0], [0.0, 1.0], [3.0, 1.0], [4.0, 1.0]])
    values = torch.tensor([[0.5, 0.5], [0.6, 0.5], [0.7, 0.5], [0.8, 0.5], [0.9, 0.5]])
    next_value = torch.tensor([1.0, 0.5])
    terminated = torch.tensor([[0, 0], [1, 1], [0, 0], [0, 0], [0, 0]], dtype=torch.bool)
    episode_end = torch.tensor([[0, 0], [1, 0], [0, 0], [0, 0], [1, 0]], dtype=torch.bool)
    valid = torch.tensor([[1, 1], [1, 1], [0, 1], [1, 1], [1, 1]], dtype=torch.bool)
    adv, ret = gae(rewards, values, next_value, terminated, episode_end, valid, gamma=0.9, lam=0.8)
    # env 0: A4 = 4 + 0.9 * 1.0 - 0.9 = 4.0 (truncated: bootstraps); A3 = 3 + 0.9 * 0.9 - 0.8 + 0.72 * 4.0
    # = 5.89; A2 = 0 (autoreset step); A1 = 2 - 0.6 = 1.4 (terminated); A0 = 1 + 0.9 * 0.6 - 0.5 + 0.72 * 1.4
    expected0 = [2.048, 1.4, 0.0, 5.89, 4.0]
    # env 1: delta = 1 + 0.45 - 0.5 = 0.95 but at t=1 (1 - 0.5 = 0.5, no bootstrap, the sum stops there)
    expected1 = [0.95 + 0.72 * 0.5, 0.5, 0.95 + 0.72 * (0.95 + 0.72 * 0.95), 0.95 + 0.72 * 0.95, 0.95]
    np.testing.assert_allclose(adv[:, 0], expected0, rtol=1e-6)
    np.testing.assert_allclose(adv[:, 1], expected1, rtol=1e-6)
    np.testing.assert_allclose(ret, adv + values)


@pytest.fixture(scope="module", params=[1, 2], ids=["seed1", "seed2"])
def cartpole_run(request, tmp_path_factory):
    """CartPole-v1 with the classic preset, 100k steps, nothing typed but the seed."""
    logdir = tmp_path_factory.mktemp(f"ppo_cartpole{request.param}")
    ppo.main(["--env", "CartPole-v1", "--seed", str(request.param), "--logdir", str(logdir)])
    return only_run(logdir)


def test_ppo_learns_cartpole(cartpole_run, capsys):
    scores = ppo.main(["--eval", str(cartpole_run / "final.pt"), "--eval-episodes", "10"])
    assert np.mean(scores) >= 475, f"final checkpoint evaluates at {np.mean(scores):.1f}: {scores}"
    assert "CartPole-v1: 10 episodes, score" in capsys.readouterr().out
    tags = set(scalar_tags(cartpole_run))
    assert {"charts/episodic_return", "charts/episodic_length", "charts/SPS", "charts/learning_rate",
            "losses/value_loss", "losses/policy_loss", "losses/entropy", "losses/approx_kl", "losses/clipfrac",
            "losses/explained_variance", "eval/episodic_return", "eval/episodic_return_std"} <= tags
    lr = [v for _, _, v in read_scalars(cartpole_run, "charts/learning_rate")]
    assert lr[0] == pytest.approx(1e-3) and lr[-1] < 1e-4  # annealed linearly towards 0


@pytest.mark.parametrize("seed", [1, 2])
def test_ppo_learns_inverted_pendulum(seed, tmp_path):
    """MuJoCo preset (observation and reward normalization), a 50k-step budget. Random play balances
    for about 5-10 steps; the episode cap is 1,000."""
    ppo.main(["--env", "InvertedPendulum-v5", "--seed", str(seed), "--total-timesteps", "50000",
              "--logdir", str(tmp_path)])
    run = only_run(tmp_path)
    saved = torch.load(run / "final.pt", weights_only=True)
    stats = saved["normalization"]["obs"]
    assert len(stats["mean"]) == 4 and stats["count"] > 40_000  # statistics travel with the checkpoint
    scores = ppo.main(["--eval", str(run / "final.pt"), "--eval-episodes", "10"])
    assert np.mean(scores) >= 500, f"final checkpoint evaluates at {np.mean(scores):.1f}: {scores}"


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun is not on PATH")
def test_two_processes_sum_to_the_global_gradient_and_stay_identical(tmp_path):
    torchrun = str(Path(sys.executable).parent / "torchrun") if (Path(sys.executable).parent / "torchrun").exists() \
        else "torchrun"
    out = tmp_path / "diff.txt"
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", str(ROOT / "tests" / "_ppo_allreduce.py"),
                           str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    diff, scale = map(float, out.read_text().split())
    assert scale > 1e-3 and diff < 1e-6 * max(scale, 1.0), (diff, scale)

    # A short job: rank 0 logs and checkpoints; every update checks that both ranks hold the same weights.
    def job(logdir):
        return subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "agents.ppo",
                               "--env", "CartPole-v1", "--total-timesteps", "2048", "--eval-interval", "0",
                               "--logdir", str(logdir)],
                              capture_output=True, text=True, timeout=300, cwd=ROOT)

    runs = tmp_path / "runs"
    proc = job(runs)
    if proc.returncode != 0 and "(SIGABRT)" in proc.stderr:
        # Seen once in CI on a busy 2-core machine, not reproduced since: a rank killed by SIGABRT in gloo.
        # One retry, said in the test summary; a second failure fails the test with both ranks' output.
        warnings.warn("torchrun job: a rank aborted (SIGABRT); retried once:\n" + proc.stderr[:2000])
        runs = tmp_path / "runs_retry"
        proc = job(runs)
    # the ranks' own lines come first in torchrun's stderr; its summary of a failure last
    assert proc.returncode == 0, proc.stderr[:3000] + "\n...\n" + proc.stderr[-1500:]
    assert "over 2 ranks, parameters identical after every update" in proc.stderr
    run = only_run(runs)
    assert torch.load(run / "final.pt", weights_only=True)["global_step"] == 2048


def test_breakout_logs_checkpoints_and_resumes(tmp_path):
    args = ["--env", "Breakout", "--num-envs", "4", "--num-steps", "32", "--eval-interval", "0",
            "--checkpoint-interval", "128", "--logdir", str(tmp_path)]
    ppo.main([*args, "--total-timesteps", "256"])
    run = only_run(tmp_path)
    first = torch.load(run / "checkpoint.pt", weights_only=True)
    assert first["global_step"] == 256 and first["update"] == 2
    ppo.main(["--resume", str(run / "checkpoint.pt"), "--total-timesteps", "384"])
    assert only_run(tmp_path) == run
    steps = [s for _, s, _ in read_scalars(run, "losses/value_loss")]
    assert steps == [128, 256, 384]  # continued, not restarted
    final = torch.load(run / "final.pt", weights_only=True)
    assert final["update"] == 3
    assert not torch.equal(final["agent"]["actor.weight"], first["agent"]["actor.weight"])


def test_a_divergence_ends_the_run_in_one_line_but_a_nan_explained_variance_does_not(tmp_path, monkeypatch, capsys):
    args = ["--env", "CartPole-v1", "--total-timesteps", "512", "--eval-interval", "0"]
    # the returns of a rollout that do not vary: explained variance is nan, and training goes on
    monkeypatch.setattr(ppo, "explained_variance", lambda batch: torch.tensor(float("nan")))
    ppo.main([*args, "--logdir", str(tmp_path / "flat")])
    assert torch.load(only_run(tmp_path / "flat") / "final.pt", weights_only=True)["global_step"] == 512
    real = ppo.update

    def diverging(*a, **k):
        stats = real(*a, **k)
        return {**stats, "value_loss": stats["value_loss"] * float("nan")}

    monkeypatch.setattr(ppo, "update", diverging)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        ppo.main([*args, "--logdir", str(tmp_path / "diverged")])
    assert exit_.value.code == 3
    err = capsys.readouterr().err
    assert "error: training diverged at step 256 (value_loss=nan)" in err and "Traceback" not in err

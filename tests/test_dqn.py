"""DQN: learns CartPole, logs and checkpoints Breakout, resumes, evaluates, and fails cleanly on bad input."""
import copy
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

def only_run(logdir: Path) -> Path:
    runs = [p for p in logdir.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "agents.dqn", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=Path(__file__).parent.parent)


@pytest.fixture(scope="module", params=[1, 2], ids=["seed1", "seed2"])
def cartpole_run(request, tmp_path_factory):
    """CartPole-v1 with the classic preset and nothing else typed but the seed."""
    logdir = tmp_path_factory.mktemp(f"cartpole{request.param}")
    dqn.main(["--env", "CartPole-v1", "--seed", str(request.param), "--logdir", str(logdir)])
    return only_run(logdir)


def test_dqn_learns_cartpole(cartpole_run):
    """What a user would check: the final checkpoint, evaluated greedily for 10 episodes."""
    returns = np.array([v for _, _, v in read_scalars(cartpole_run, "charts/episodic_return")])
    assert returns[:10].mean() < 50  # it started from a random policy
    scores = dqn.main(["--eval", str(cartpole_run / "final.pt"), "--eval-episodes", "10"])
    assert len(scores) == 10
    # CartPole-v0's "solved" threshold, far above random play's ~22; the preset reaches 500 on most seeds.
    assert np.mean(scores) >= 195, f"final checkpoint evaluates at {np.mean(scores):.1f} < 195: {scores}"
    # evaluation during training logged its mean and spread and kept the best checkpoint
    assert len(read_scalars(cartpole_run, "eval/episodic_return")) == 5
    assert read_scalars(cartpole_run, "eval/episodic_return_std")
    assert (cartpole_run / "best.pt").is_file()


def test_eval_plays_full_episodes_and_records_video(cartpole_run):
    if not cartpole_run.name.startswith("CartPole-v1__dqn__1__"):
        pytest.skip("once is enough")
    out = cli("--eval", str(cartpole_run / "final.pt"), "--eval-episodes", "2", "--capture-video")
    assert out.returncode == 0, out.stderr
    assert "CartPole-v1: 2 episodes, score" in out.stdout
    videos = list((cartpole_run / "videos").glob("*.mp4"))
    assert videos and videos[0].stat().st_size > 1000


def lua_update(q64, target64, batch, lr, gamma, g, g2):
    """One update of DeepMind's NeuralQLearner (run_gpu's dqn/NeuralQLearner.lua), in float64:
    delta = r + gamma * (1 - term) * max_a' Q_target(s', a') - Q(s, a), clipped to [-1, 1];
    dw = the network's backward of the deltas (summed over the batch, no division);
    g = 0.95 g + 0.05 dw; g2 = 0.95 g2 + 0.05 dw^2; w += lr * dw / sqrt(g2 - g^2 + 0.01)."""
    def forward(net, x):  # the MLP's layers in float64 (its forward casts to float32)
        return net.head(net.torso.net(x.double()))

    params = list(q64.parameters())
    with torch.no_grad():
        q2_max = forward(target64, batch["next_obs"]).max(dim=1).values
    q_sa = forward(q64, batch["obs"]).gather(1, batch["actions"].long().unsqueeze(1)).squeeze(1)
    delta = batch["rewards"].double() + gamma * (1 - batch["terminated"].double()) * q2_max - q_sa
    delta = delta.clamp(-1, 1).detach()
    dw = torch.autograd.grad((delta * q_sa).sum(), params)
    with torch.no_grad():
        for w, d, gi, g2i in zip(params, dw, g, g2):
            gi.mul_(0.95).add_(0.05 * d)
            g2i.mul_(0.95).add_(0.05 * d * d)
            w.add_(lr * d / torch.sqrt(g2i - gi * gi + 0.01))


def test_update_matches_deepminds_lua_transcription():
    """Our loss and RMSpropTF with the atari preset against the Lua agent's arithmetic, two updates."""
    torch.manual_seed(0)
    cfg = dqn.prepare(dqn.Config(env="Breakout"))
    assert (cfg.optimizer, cfg.learning_rate, cfg.rmsprop_alpha, cfg.rmsprop_eps) == ("rmsproptf", 2.5e-4, 0.95, 0.01)
    q = dqn.QNetwork((6,), 3, (16,))
    target = copy.deepcopy(q)
    with torch.no_grad():
        for p in target.parameters():
            p.add_(0.3 * torch.randn_like(p))
    q64, target64 = copy.deepcopy(q).double(), copy.deepcopy(target).double()
    batch = {"obs": torch.randn(32, 6), "next_obs": torch.randn(32, 6), "actions": torch.randint(0, 3, (32,)),
             "rewards": torch.randn(32) * 2, "terminated": torch.rand(32) < 0.2}
    optimizer = dqn.make_optimizer(cfg, q.parameters())
    g = [torch.zeros_like(p) for p in q64.parameters()]
    g2 = [torch.zeros_like(p) for p in q64.parameters()]
    before = [p.detach().clone() for p in q.parameters()]
    for _ in range(2):
        loss, _ = dqn.td_loss(q, target, batch, cfg.gamma)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        lua_update(q64, target64, batch, cfg.learning_rate, cfg.gamma, g, g2)
    moved = max((p - b).abs().max().item() for p, b in zip(q.parameters(), before))
    diff = max((p.double() - p64).abs().max().item() for p, p64 in zip(q.parameters(), q64.parameters()))
    assert moved > 1e-4  # the update did something
    assert diff < 1e-7, f"max abs difference to the Lua update {diff:.3g}"
    print(f"max abs difference to DeepMind's Lua update: {diff:.3g} (weights moved up to {moved:.3g})")


def test_epsilon_anneals_from_learning_starts():
    cfg = dqn.prepare(dqn.Config(env="CartPole-v1", learning_starts=1000, exploration_steps=8000, end_e=0.04))
    assert dqn.epsilon_at(0, cfg) == dqn.epsilon_at(1000, cfg) == 1.0
    assert dqn.epsilon_at(5000, cfg) == pytest.approx(1.0 - 0.5 * 0.96)
    assert dqn.epsilon_at(9000, cfg) == dqn.epsilon_at(10**9, cfg) == pytest.approx(0.04)


def test_presets_by_env_family(capsys):
    atari = dqn.prepare(dqn.Config(env="Breakout"))
    assert (atari.learning_starts, atari.exploration_steps, atari.buffer_size, atari.target_network_frequency) == (
        50_000, 1_000_000, 1_000_000, 10_000)
    classic = dqn.prepare(dqn.Config(env="CartPole-v1", learning_rate=1e-3))
    assert (classic.total_timesteps, classic.optimizer, classic.hidden_sizes) == (50_000, "adam", (256, 256))
    assert classic.learning_rate == 1e-3  # typed flags win over the preset
    assert dqn.announce(classic).startswith("preset classic: ")
    assert "learning-rate" not in dqn.announce(classic)
    help_text = cli("--help").stdout
    assert "Preset atari" in help_text and "classic" in help_text and "(default: preset)" in help_text


BREAKOUT = ["--env", "Breakout", "--buffer-size", "1000", "--learning-starts", "500", "--batch-size", "8",
            "--checkpoint-interval", "1000", "--log-interval", "250", "--target-network-frequency", "500",
            "--eval-interval", "0"]
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


def test_breakout_resumes_with_its_saved_replay_memory(tmp_path, capsys):
    """--save-replay: checkpoint.pt holds the memory (final.pt does not) and --resume updates at once."""
    dqn.main([*BREAKOUT, "--total-timesteps", "1000", "--save-replay", "--logdir", str(tmp_path)])
    run = only_run(tmp_path)
    assert torch.load(run / "checkpoint.pt", weights_only=True)["replay"]["size"] == 1000
    assert "replay" not in torch.load(run / "final.pt", weights_only=True)
    capsys.readouterr()
    dqn.main(["--resume", str(run / "checkpoint.pt"), "--total-timesteps", "1250"])
    assert "at step 1000; with its replay memory" in capsys.readouterr().err
    assert [s for _, s, _ in read_scalars(run, "losses/td_loss")][-1] == 1250  # no refill before updates
    # stopped before learning starts, the resumed run waits for it as the uninterrupted one would
    dqn.main([*BREAKOUT, "--total-timesteps", "300", "--save-replay", "--logdir", str(tmp_path / "early")])
    early = only_run(tmp_path / "early")
    dqn.main(["--resume", str(early / "checkpoint.pt"), "--total-timesteps", "1000"])
    assert [s for _, s, _ in read_scalars(early, "losses/td_loss")][0] == 750  # updates from step 501


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
    assert "stopped by SIGTERM" in err and "Traceback" not in err
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
    assert_one_line_error(cli("--resume", str(final), "--optimizer", "rmsproptf"), "--optimizer")
    assert_one_line_error(cli("--resume", str(final)), "already at step 300")
    # a saved replay memory that filled and wrapped resumes only into a memory of its size
    dqn.main(["--env", "CartPole-v1", "--total-timesteps", "350", "--learning-starts", "100", "--buffer-size", "100",
              "--save-replay", "--logdir", str(tmp_path / "wrapped")])
    checkpoint = only_run(tmp_path / "wrapped") / "checkpoint.pt"
    assert_one_line_error(cli("--resume", str(checkpoint), "--total-timesteps", "400", "--buffer-size", "200"),
                          "--buffer-size", "wrapped")


def test_unsupported_observations(tmp_path):
    assert_one_line_error(cli("--env", "FrozenLake-v1", "--logdir", str(tmp_path)), "FrozenLake-v1")


def test_foreign_checkpoint(tmp_path):
    foreign = tmp_path / "model.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    assert_one_line_error(cli("--resume", str(foreign)), "not a checkpoint")


def test_lr_schedule_counts_updates_and_resumes_where_it_was(tmp_path):
    """--lr-schedule linear over the run's updates: logged as charts/learning_rate, saved in checkpoints,
    and a resumed run goes on from the lr it had reached (not from the start of the schedule)."""
    args = ["--env", "CartPole-v1", "--total-timesteps", "3000", "--learning-starts", "1000", "--train-frequency", "1",
            "--gradient-steps", "1", "--lr-schedule", "linear", "--log-interval", "500", "--checkpoint-interval",
            "2000", "--eval-interval", "0", "--logdir", str(tmp_path)]
    dqn.main(args)
    run = only_run(tmp_path)
    lrs = dict((s, v) for _, s, v in read_scalars(run, "charts/learning_rate"))
    lr = dqn.CLASSIC["learning_rate"]
    # 2,000 updates (one per step after step 1,000): at step s, 1 - (s - 1000) / 2000 of the lr
    for step in (1000, 2000, 2500):
        assert lrs[step] == pytest.approx(lr * (1 - (step - 1000) / 2000), rel=1e-4), step
    saved = torch.load(run / "checkpoint.pt", weights_only=True)
    assert saved["lr_schedule"]["spec"] == "linear"
    mid = torch.load(run / "final.pt", weights_only=True)["optimizer"]["param_groups"][0]["lr"]
    assert mid == pytest.approx(0.0, abs=1e-9)

    # A run stopped at step 2,000 (by an observer of its evaluations) after its checkpoint at 1,500
    # (500 updates: 3/4 of the lr) resumes there: its refill makes no updates, so at step 2,500 the lr is
    # still 3/4, and the 500 updates after it take it to 1/2 by step 3,000.
    from common import observers

    class Stop(Exception):
        pass

    def stop_at_2000(step, score):
        if step == 2000:
            raise Stop

    with pytest.raises(Stop), observers.observe_evaluations(stop_at_2000):
        dqn.main([*args[:-1], str(tmp_path / "second"), "--checkpoint-interval", "1500", "--eval-interval", "2000",
                  "--eval-episodes", "1"])
    second = only_run(tmp_path / "second")
    assert torch.load(second / "checkpoint.pt", weights_only=True)["global_step"] == 1500
    dqn.main(["--resume", str(second / "checkpoint.pt")])
    after = dict((s, v) for _, s, v in read_scalars(second, "charts/learning_rate"))
    assert after[2500] == pytest.approx(0.75 * lr, rel=1e-4)
    assert after[3000] == pytest.approx(0.5 * lr, rel=1e-3)


def test_lr_mult_puts_the_torso_in_a_group_of_its_own(tmp_path, capsys):
    dqn.main(["--env", "CartPole-v1", "--total-timesteps", "600", "--learning-starts", "500", "--eval-interval", "0",
              "--lr-mult", "torso=0.1", "--logdir", str(tmp_path)])
    assert ("lr-mult: torso x0.1 (4 tensors, 67,072 weights); the rest x1 (2 tensors, 514 weights)"
            in capsys.readouterr().err)
    groups = torch.load(only_run(tmp_path) / "final.pt", weights_only=True)["optimizer"]["param_groups"]
    lr = dqn.CLASSIC["learning_rate"]
    assert sorted(g["lr"] for g in groups) == pytest.approx([0.1 * lr, lr])
    with pytest.raises(SystemExit) as e:
        dqn.main(["--env", "CartPole-v1", "--lr-mult", "trunk=0.1", "--logdir", str(tmp_path / "x")])
    assert (e.value.code == 2
            and "'trunk' matches no parameter; the top-level modules are head, torso" in capsys.readouterr().err)


@pytest.mark.parametrize("agent", ["dqn", "rainbow"])
def test_atari_updates_run_while_the_games_step_and_change_nothing(agent, tmp_path, monkeypatch):
    """On Atari, every update runs between the env's send and recv (ale-py steps the games on its own
    threads meanwhile), as many as one per --train-frequency steps, and the run ends with the weights
    it ends with when the env steps after the updates instead (EnvStep stepping in recv)."""
    import importlib

    from agents import off_policy
    from envs.atari import AtariEnv
    module = importlib.import_module(f"agents.{agent}")
    pending, during, outside = [False], [], []
    send, recv, learn = AtariEnv.send, AtariEnv.recv, module.learn

    def sending(self, actions):
        pending[0] = True
        send(self, actions)

    def receiving(self):
        pending[0] = False
        return recv(self)

    def learning(*args, **kwargs):
        (during if pending[0] else outside).append(1)
        return learn(*args, **kwargs)
    monkeypatch.setattr(AtariEnv, "send", sending)
    monkeypatch.setattr(AtariEnv, "recv", receiving)
    monkeypatch.setattr(module, "learn", learning)
    args = ["--env", "Breakout", "--buffer-size", "1000", "--learning-starts", "500", "--batch-size", "8",
            "--train-frequency", "4", "--total-timesteps", "700", "--eval-interval", "0", "--checkpoint-interval", "0"]
    module.main([*args, "--logdir", str(tmp_path / "aside")])
    assert not outside and len(during) == 200 // 4

    in_turn = off_policy.EnvStep.__init__

    def stepping_in_recv(self, env):
        in_turn(self, env)
        self.aside = False
    monkeypatch.setattr(off_policy.EnvStep, "__init__", stepping_in_recv)
    module.main([*args, "--logdir", str(tmp_path / "in_turn")])
    assert len(outside) == 200 // 4
    aside, after = (torch.load(only_run(tmp_path / name) / "final.pt", weights_only=True)
                    for name in ("aside", "in_turn"))
    weights = "q_net" if agent == "dqn" else "net"
    for name, value in aside[weights].items():
        assert torch.equal(value, after[weights][name]), name

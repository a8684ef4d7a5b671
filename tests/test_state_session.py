"""The run state (every stateful part by name, saved and restored generically), the session's
recurring events, and evaluation that never outlasts training."""
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

import envs
from agents import env_setup
from common.errors import UserError
from common.seeding import EVAL_SEED_OFFSET, derived_seed
from common.session import Milestones, finite, read_back
from common.state import RNG, Adapter, Counters, RunState, Tensor


def _parts(seed: int):
    torch.manual_seed(seed)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    return net, opt


def test_run_state_round_trip_restores_every_part_and_keeps_flat_keys():
    net, opt = _parts(0)
    alpha = torch.zeros(1, requires_grad=True)
    with torch.no_grad():
        alpha.fill_(0.7)
    c = Counters(global_step=120, update_debt=3)
    rng = np.random.default_rng(5)
    state = RunState(net=net, optimizer=opt, log_alpha=Tensor(alpha), rng=RNG(rng), counters=c)
    saved = state.state_dict()
    # counters are stored flat, under the keys earlier versions wrote
    assert saved["global_step"] == 120 and saved["update_debt"] == 3 and "counters" not in saved
    expected_draw = np.random.default_rng(5).random()
    rng.random()  # move on; the restore must bring it back

    net2, opt2 = _parts(1)
    alpha2 = torch.zeros(1, requires_grad=True)
    c2 = Counters(global_step=0, update_debt=0)
    rng2 = np.random.default_rng(99)
    RunState(net=net2, optimizer=opt2, log_alpha=Tensor(alpha2), rng=RNG(rng2), counters=c2).restore(saved, "x.pt")
    assert torch.equal(net2.weight, net.weight) and torch.equal(net2.bias, net.bias)
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert alpha2.item() == pytest.approx(0.7) and alpha2.requires_grad  # restored in place
    assert (c2.global_step, c2.update_debt) == (120, 3)
    assert rng2.random() == expected_draw


def test_run_state_refusals_are_one_line():
    net, _ = _parts(0)
    state = RunState(net=net, counters=Counters(global_step=0))
    with pytest.raises(UserError, match=r"cannot resume from a\.pt: it has no 'net'"):
        state.restore({"global_step": 1}, "a.pt")
    with pytest.raises(UserError, match=r"cannot resume from a\.pt: it has no 'global_step'"):
        state.restore({"net": net.state_dict()}, "a.pt")
    wrong = torch.nn.Linear(5, 2).state_dict()
    with pytest.raises(UserError, match=r"cannot resume from a\.pt: it does not match this run \(Error"):
        state.restore({"net": wrong, "global_step": 1}, "a.pt")
    with pytest.raises(TypeError, match="no state_dict"):
        state.add("x", object())
    with pytest.raises(ValueError, match="already has a part named 'net'"):
        state.add("net", net)


def test_optional_parts_and_counter_defaults_read_earlier_checkpoints():
    scaler = Adapter(lambda: {"scale": 2.0}, lambda s: loaded.update(s))
    loaded = {}
    c = Counters(defaults={"beta_origin": 7}, global_step=0, beta_origin=0)
    state = RunState(counters=c).add("grad_scaler", scaler, optional=True)
    state.restore({"global_step": 40}, "old.pt")  # no grad_scaler, no beta_origin: an earlier version's
    assert (c.global_step, c.beta_origin) == (40, 7) and loaded == {}
    state.restore({"global_step": 41, "beta_origin": 1, "grad_scaler": {"scale": 8.0}}, "new.pt")
    assert (c.global_step, c.beta_origin) == (41, 1) and loaded == {"scale": 8.0}
    with pytest.raises(AttributeError, match="no field 'globl_step'"):
        c.globl_step = 3  # a typo is not a new counter


def test_resume_says_and_waits_what_its_replay_memory_allows(capsys):
    """A resume: with its memory, updates from where it stopped or the first run's learning start,
    whichever is later; without, after a refill of --learning-starts steps; at its budget, nothing to
    say (studies.grid reads REFILLING as a run that learned from other transitions)."""
    from types import SimpleNamespace

    from agents import off_policy

    cfg = SimpleNamespace(learning_starts=1_600, total_timesteps=100_000)
    assert off_policy.learning_starts(cfg, 0, resumed=False) == 1_600
    assert off_policy.learning_starts(cfg, 50_000, True, replay_restored=True, origin=1_600) == 50_000
    assert off_policy.learning_starts(cfg, 1_000, True, replay_restored=True, origin=1_600) == 1_600
    assert off_policy.learning_starts(cfg, 1_000, True, replay_restored=True, origin=500) == 1_000
    assert off_policy.learning_starts(cfg, 50_000, True, replay_restored=False) == 51_600
    assert off_policy.learning_starts(cfg, 100_000, True, replay_restored=True) == 100_000
    assert "note:" not in capsys.readouterr().err  # resumed at the budget: it only finishes
    assert off_policy.refill_note(cfg, {"global_step": 50_000}, False).startswith(off_policy.REFILLING)
    assert off_policy.refill_note(cfg, {"global_step": 50_000}, True) == "with its replay memory"
    assert off_policy.refill_note(cfg, {"global_step": 100_000}, False) == ""


def test_milestones_fall_at_multiples_also_after_a_resume():
    m = Milestones(0, log=100, eval=250, checkpoint=0, every=None)
    due = {name: [s for s in range(1, 1001) if m.due(name, s)] for name in ("log", "eval", "checkpoint")}
    assert due["log"] == list(range(100, 1001, 100)) and due["eval"] == [250, 500, 750, 1000]
    assert due["checkpoint"] == []
    resumed = Milestones(330, eval=250)
    # the first steps at or past 500, 750
    assert [s for s in range(331, 1001, 7) if resumed.due("eval", s)] == [506, 751]
    every = Milestones(10, log=None)
    assert [every.due("log", s) for s in (11, 12, 13)] == [True, True, True]
    jumped = Milestones(0, checkpoint=100)
    assert jumped.due("checkpoint", 350) and not jumped.due("checkpoint", 399) and jumped.due("checkpoint", 400)


def test_read_back_and_finite():
    values = read_back({"a": torch.tensor(1.5), "b": 2, "c": None, "d": torch.tensor([3.0])})
    assert values == {"a": 1.5, "b": 2.0, "d": 3.0} and list(values) == ["a", "b", "d"]
    assert finite([torch.ones(3), torch.zeros(2)]) and not finite([torch.ones(3), torch.tensor([math.nan])])


def test_an_evaluation_budget_cuts_episodes_and_scores_them_as_they_stood():
    """Pendulum never ends before its 200-step limit: at a budget of 30 steps each episode is cut and
    scored by its 30 raw rewards, which a plain loop over one env with the same seed reproduces."""
    policy = lambda obs: np.zeros((len(obs), 1), dtype=np.float32)  # noqa: E731
    env = envs.make("Pendulum-v1", 3)
    scores = env_setup.play_episodes(env, policy, 3, seed=4, atari=False, max_episode_steps=30)
    env.close()
    assert len(scores) == 3 and scores.cut == 3
    for i, score in enumerate(scores):
        one = envs.make("Pendulum-v1", 1)
        one.reset(seed=derived_seed(4, EVAL_SEED_OFFSET) + i)
        total = sum(float(one.step(np.zeros((1, 1), np.float32))[1][0]) for _ in range(30))
        one.close()
        assert score == pytest.approx(total, rel=1e-6)
    # without a budget the same evaluation plays the episodes to their end (200 steps), none cut
    env = envs.make("Pendulum-v1", 3)
    full = env_setup.play_episodes(env, policy, 3, seed=4, atari=False)
    env.close()
    assert full.cut == 0 and all(f < s for f, s in zip(full, scores))


def test_episode_budget_is_the_runs_own_during_training_and_none_for_eval():
    class Cfg:
        total_timesteps = 2_000

    assert env_setup.episode_step_budget(Cfg, 10, training=True) == 200
    assert env_setup.episode_step_budget(Cfg, 10, training=False) is None
    Cfg.total_timesteps = 10_000_000  # a real run: far more than a full game (27k agent steps)
    assert env_setup.episode_step_budget(Cfg, 10, training=True) > 108_000 // 4


def test_a_short_atari_run_ends_with_an_evaluation_within_its_budget(tmp_path):
    """The final evaluation of a 600-step Breakout run plays its 10 games at once and at most 60 steps
    each: an untrained greedy agent that never presses FIRE after losing a life would otherwise play
    every game to the 108k-frame cap."""
    out = subprocess.run([sys.executable, "-m", "agents.rainbow", "--env", "Breakout", "--total-timesteps", "600",
                          "--learning-starts", "200", "--buffer-size", "1000", "--logdir", str(tmp_path)],
                         capture_output=True, text=True, timeout=None)
    assert out.returncode == 0, out.stderr[-2000:]
    line = [x for x in out.stderr.splitlines() if x.startswith("evaluation at step 600")]
    # an untrained agent's games last longer than 60 steps: every one is cut, and the line says so
    assert line and "10 episodes" in line[0] and "10 cut short by the evaluation budget" in line[0], out.stderr[-2000:]

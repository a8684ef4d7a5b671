"""SAC: learns Pendulum with K-FAC and with Adam, K-FAC's capture gating, and a HalfCheetah run that logs,
checkpoints and resumes."""
import copy
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from agents import sac
from common.errors import UserError
from common.events import read_scalars, scalar_tags


def only_run(logdir: Path) -> Path:
    runs = [p for p in logdir.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def networks(optimizer="kfac"):
    cfg = sac.prepare(sac.Config(env="Pendulum-v1", optimizer=optimizer, kfac_factor_interval=1, kfac_actor=True))
    torch.manual_seed(0)
    actor, critics = sac.Actor(3, 1, cfg.hidden_sizes), sac.Critics(3, 1, cfg.hidden_sizes)
    return cfg, actor, critics


def factors(kfac):
    return {name: (layer.A.clone(), layer.G.clone()) for name, layer in kfac.layers.items() if layer.A is not None}


def test_actor_update_through_the_critics_leaves_their_factors_alone():
    cfg, actor, critics = networks()
    target = copy.deepcopy(critics)
    kfac = sac.Preconditioners(cfg, critics, actor)
    q_opt = kfac.optimizer(list(critics.parameters()), cfg.q_lr, "critics")
    actor_opt = kfac.optimizer(list(actor.parameters()), cfg.policy_lr, "actor")
    log_alpha = torch.zeros(1, requires_grad=True)
    alpha_opt = torch.optim.Adam([log_alpha], lr=cfg.q_lr)
    batch = {"obs": torch.randn(64, 3), "next_obs": torch.randn(64, 3), "actions": torch.rand(64, 1) * 2 - 1,
             "rewards": torch.randn(64), "terminated": torch.zeros(64, dtype=torch.bool),
             "discounts": torch.full((64,), 0.99)}
    for _ in range(2):
        sac.update(cfg, batch, actor, critics, target, kfac, q_opt, actor_opt, log_alpha, alpha_opt, -1.0)
        # The critics' step folded their capture into the factors and emptied the accumulators; the
        # actor's update that followed ran its loss through both critics, outside their capture, and
        # left nothing there for the next factor update.
        for name, layer in kfac.critics.layers.items():
            assert layer.A is not None and (layer._a_count, layer._g_count) == (0, 0), name
        for name, layer in kfac.actor.layers.items():
            assert layer.A is not None and (layer._a_count, layer._g_count) == (0, 0), name
    # the critics' 3 layers, each holding both critics (their factors stacked); the actor's body (2), mean, log_std
    assert len(kfac.critics.layers) == 3 and len(kfac.actor.layers) == 4
    assert kfac.critics.layers["body.1"].A.shape == (2, 257, 257)
    # and each critic's factors are the Gaussian Fisher's: G of a one-output head is E[g^2] ~ 1
    for g in kfac.critics.layers["head"].G.flatten():
        assert 0.5 < g.item() < 2.0


def test_targets_carry_no_hooks_and_actor_loss_leaves_no_critic_gradients():
    cfg, actor, critics = networks()
    kfac = sac.Preconditioners(cfg, critics, actor)
    target = copy.deepcopy(critics)  # as train() makes it: before any capture
    obs, actions = torch.randn(8, 3), torch.rand(8, 1)
    kfac.critic_fisher(critics, obs, actions)  # a capture opened and closed on the critics
    later = copy.deepcopy(critics)
    for copied in (target, later):
        assert all(not m._forward_hooks and not m._backward_hooks for m in copied.modules())
    # the target's forwards and backwards, inside a capture of the critics, feed nothing
    counts = {n: layer._a_count for n, layer in kfac.critics.layers.items()}
    with kfac.critics.capture():
        torch.min(*target(obs, actions)).sum().backward()
    assert {n: layer._a_count for n, layer in kfac.critics.layers.items()} == counts
    critics.zero_grad(set_to_none=True)
    obs = torch.randn(8, 3)
    action, log_prob = actor.sample(obs)
    (log_prob - critics(obs, action)[0]).mean().backward(inputs=list(actor.parameters()))
    assert all(p.grad is None for p in critics.parameters())
    assert all(p.grad is not None for p in actor.parameters())


def test_squashed_log_prob_matches_change_of_variables():
    _, actor, _ = networks("adam")
    obs = torch.randn(5, 3)
    dist = actor.distribution(obs)
    torch.manual_seed(3)
    action, log_prob = actor.sample(obs, dist)
    torch.manual_seed(3)
    u = dist.rsample()
    expected = dist.log_prob(u) - torch.log(1 - torch.tanh(u) ** 2).sum(1)
    torch.testing.assert_close(log_prob, expected, atol=1e-4, rtol=1e-4)
    assert torch.equal(action, torch.tanh(u))


@pytest.mark.parametrize("optimizer", ["kfac", "adam"])
def test_sac_learns_pendulum(optimizer, tmp_path):
    """The final checkpoint of the classic preset (15k steps), evaluated with the deterministic policy."""
    sac.main(["--env", "Pendulum-v1", "--optimizer", optimizer, "--seed", "1", "--logdir", str(tmp_path)])
    run = only_run(tmp_path)
    scores = sac.main(["--eval", str(run / "final.pt"), "--eval-episodes", "10"])
    # random play scores about -1,200; -250 is a pendulum swung up and held from every start
    assert np.mean(scores) >= -250, f"{optimizer}: final checkpoint evaluates at {np.mean(scores):.1f}: {scores}"


HALFCHEETAH = ["--env", "HalfCheetah", "--learning-starts", "300", "--batch-size", "32", "--buffer-size", "2000",
               "--checkpoint-interval", "500", "--log-interval", "200", "--eval-interval", "0"]
TAGS = ["charts/episodic_return", "charts/SPS", "losses/qf1_loss", "losses/qf2_loss", "losses/actor_loss",
        "losses/alpha", "losses/alpha_loss"]


def test_halfcheetah_logs_checkpoints_and_resumes_with_its_replay(tmp_path):
    sac.main([*HALFCHEETAH, "--total-timesteps", "1000", "--save-replay", "--logdir", str(tmp_path)])
    run = only_run(tmp_path)
    assert run.name.startswith("HalfCheetah-v5__sac__1__")
    assert set(TAGS) <= set(scalar_tags(run))
    saved = torch.load(run / "checkpoint.pt", weights_only=True)
    assert saved["global_step"] == 1000 and saved["replay"]["size"] == 1000
    assert saved["kfac"]["critics"]["layers"]  # K-FAC's factors are in the checkpoint

    sac.main(["--resume", str(run / "checkpoint.pt"), "--total-timesteps", "1400"])
    assert only_run(tmp_path) == run
    steps = [s for _, s, _ in read_scalars(run, "losses/qf1_loss")]
    assert steps[-1] == 1400 and len(steps) == len(set(steps))
    resumed = torch.load(run / "checkpoint.pt", weights_only=True)
    assert resumed["global_step"] == 1400 and resumed["replay"]["size"] == 1400
    assert "replay" not in torch.load(run / "final.pt", weights_only=True)  # a policy snapshot
    assert not torch.equal(resumed["actor"]["mean.weight"], saved["actor"]["mean.weight"])
    assert resumed["kfac"]["critics"]["steps"] > saved["kfac"]["critics"]["steps"]


LEGACY = Path(__file__).parent / "data" / "v0_checkpoints" / "sac.pt"  # see its README


def test_checkpoint_of_the_version_before_the_run_state_evaluates_and_resumes(tmp_path, capsys):
    """The old code's checkpoint (with its replay memory) plays as it did and resumes; a resume with
    --no-save-replay still restores the memory (updates at once) but writes it no more."""
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(LEGACY, folder / "checkpoint.pt")
    (folder / "config.json").write_text("{}")
    sac.main(["--eval", str(folder / "checkpoint.pt"), "--eval-episodes", "2"])
    assert "Pendulum-v1: 2 episodes, score -1639.41 +/- 116.95 (min -1756.4, max -1522.5)" in capsys.readouterr().out
    sac.main(["--resume", str(folder / "checkpoint.pt"), "--total-timesteps", "800", "--no-save-replay",
              "--log-interval", "50", "--eval-interval", "0"])
    assert "at step 700; with its replay memory" in capsys.readouterr().err
    assert [s for _, s, _ in read_scalars(folder, "losses/qf1_loss")] == [750, 800]
    old, new = (torch.load(p, weights_only=True) for p in (LEGACY, folder / "final.pt"))
    assert set(new) == set(old) - {"replay"} and new["global_step"] == 800


def batch_of(seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"obs": torch.randn(64, 3, generator=g), "next_obs": torch.randn(64, 3, generator=g),
            "actions": torch.rand(64, 1, generator=g) * 2 - 1, "rewards": torch.randn(64, generator=g),
            "terminated": torch.zeros(64, dtype=torch.bool), "discounts": torch.full((64,), 0.99)}


class Learner:
    """SAC's parts as train() builds them, for updates on given batches."""

    def __init__(self, combine: str, kfac_actor: bool = True):
        self.cfg = sac.prepare(sac.Config(env="Pendulum-v1", kfac_combine=combine, hidden_sizes=(16, 16),
                                          kfac_factor_interval=2, kfac_inverse_interval=3, kfac_actor=kfac_actor))
        torch.manual_seed(0)
        self.actor, self.critics = sac.Actor(3, 1, (16, 16)), sac.Critics(3, 1, (16, 16))
        self.target = copy.deepcopy(self.critics)
        self.kfac = sac.Preconditioners(self.cfg, self.critics, self.actor)
        self.q_opt = self.kfac.optimizer(list(self.critics.parameters()), self.cfg.q_lr, "critics")
        self.actor_opt = self.kfac.optimizer(list(self.actor.parameters()), self.cfg.policy_lr, "actor")
        self.log_alpha = torch.zeros(1, requires_grad=True)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=self.cfg.q_lr)

    def state_dict(self):
        return {k: getattr(self, k).state_dict() for k in ("actor", "critics", "target", "kfac", "q_opt", "actor_opt")}

    def load_state_dict(self, state):
        for k, v in state.items():
            getattr(self, k).load_state_dict(v)

    def update(self, seed: int):
        torch.manual_seed(seed)  # the actor's samples
        sac.update(self.cfg, batch_of(seed), self.actor, self.critics, self.target, self.kfac, self.q_opt,
                   self.actor_opt, self.log_alpha, self.alpha_opt, -1.0)


@pytest.mark.parametrize("combine,kfac_actor", [("eigen-adam", True), ("graft", True), ("sgd", True), ("base", True),
                                               ("graft", False)])
def test_each_kfac_combination_resumes_its_updates_exactly(combine, kfac_actor):
    """Each --kfac-combine's optimizer and K-FAC state, saved and loaded into fresh networks, continues with
    the very updates of an uninterrupted run (basis refreshes and factor updates included); with
    --no-kfac-actor too."""
    import io

    whole, cut = Learner(combine, kfac_actor), Learner(combine, kfac_actor)
    for seed in range(5):
        whole.update(seed)
        cut.update(seed)
    buf = io.BytesIO()
    torch.save(cut.state_dict(), buf)
    buf.seek(0)
    fresh = Learner(combine, kfac_actor)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    with torch.no_grad():
        fresh.log_alpha.copy_(cut.log_alpha)
    fresh.alpha_opt.load_state_dict(cut.alpha_opt.state_dict())
    before = copy.deepcopy(fresh.critics.state_dict())
    for seed in range(5, 9):
        whole.update(seed)
        fresh.update(seed)
    assert not torch.equal(before["head.weight"], fresh.critics.state_dict()["head.weight"])
    for name, mine in [("actor", fresh.actor), ("critics", fresh.critics)]:
        for (n, p), q in zip(mine.named_parameters(), getattr(whole, name).parameters()):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=f"{combine} {name}.{n}")


def test_without_the_actors_kfac_the_actor_steps_with_plain_adam():
    """--no-kfac-actor: no K-FAC over the actor, no Fisher pass for it, and its update is torch's Adam's."""
    learner, plain = Learner("graft", kfac_actor=False), Learner("graft", kfac_actor=False)
    assert learner.kfac.actor is None and "actor" not in learner.kfac.state_dict()
    assert type(learner.actor_opt) is torch.optim.Adam
    plain.actor_opt = torch.optim.Adam(plain.actor.parameters(), lr=plain.cfg.policy_lr)
    for seed in range(3):
        learner.update(seed)
        plain.update(seed)
    for p, q in zip(learner.actor.parameters(), plain.actor.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_a_kfac_field_its_combination_does_not_use_is_refused_not_ignored(tmp_path, capsys):
    """eigen-adam (the default) has no damping and graft no KL clip: typed, either is one line, exit 2,
    nothing written; the combination that uses it takes it."""
    for argv, says in ((["--kfac-damping", "0.5"], "--kfac-damping is not used by --kfac-combine eigen-adam"),
                       (["--kfac-combine", "graft", "--kfac-actor-kl-clip", "0.01"],
                        "--kfac-actor-kl-clip is not used by --kfac-combine graft")):
        with pytest.raises(SystemExit) as exit_:
            sac.main(["--env", "Pendulum-v1", *argv, "--logdir", str(tmp_path)])
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_.value.code == 2 and len(err) == 1 and says in err[0], err
        assert not any(tmp_path.iterdir())
    assert sac.prepare(sac.Config(env="Pendulum-v1", kfac_combine="graft", kfac_damping=0.5)).kfac_damping == 0.5
    assert sac.prepare(sac.Config(env="Pendulum-v1", kfac_combine="sgd", kfac_kl_clip=0.2)).kfac_kl_clip == 0.2


def test_a_run_of_the_default_kfac_saves_its_optimizer_state(tmp_path):
    """Through the command line: the default combination's (eigen-adam's) moments are in the checkpoint."""
    sac.main(["--env", "Pendulum-v1", "--learning-starts", "100", "--hidden-sizes", "16", "--batch-size", "32",
              "--buffer-size", "1000", "--eval-interval", "0", "--kfac-factor-interval", "2",
              "--kfac-inverse-interval", "4", "--total-timesteps", "200", "--logdir", str(tmp_path)])
    saved = torch.load(only_run(tmp_path) / "final.pt", weights_only=True)
    assert saved["config"]["kfac_combine"] == "eigen-adam"
    states = saved["q_optimizer"]["state"].values()
    assert states and all({"exp_avg", "exp_avg_sq", "step"} <= set(st) for st in states)
    assert saved["kfac"]["critics"]["layers"]  # and K-FAC's factors, which set the direction


def test_a_checkpoint_from_before_kfac_actor_resumes_with_the_actors_kfac():
    """Checkpoints written before --kfac-actor existed preconditioned the actor: their config, read back
    without the field, says so (and --kfac-actor is fixed on resume), though the default is now off."""
    from common.config import config_from_checkpoint

    values = {k: v for k, v in vars(sac.prepare(sac.Config(env="Pendulum-v1"))).items() if k != "kfac_actor"}
    assert sac.Config().kfac_actor is False
    assert config_from_checkpoint(sac.Config, {"config": values}, "old.pt").kfac_actor is True
    assert "kfac_actor" in sac.FIXED_ON_RESUME


def test_an_earlier_checkpoints_two_critics_stack_in_order_or_refuse_in_one_line():
    old = torch.load(LEGACY, weights_only=True)
    saved = copy.deepcopy(old)
    sac.stack_twin_critics(saved, LEGACY)
    for i in (1, 2):  # critic i is member i - 1 of every layer, the target's and the optimizer's moments too
        assert torch.equal(saved["critics"]["body.0.weight"][i - 1], old["critics"][f"qf{i}.body.net.0.weight"])
        assert torch.equal(saved["target"]["head.bias"][i - 1], old["target"][f"qf{i}.head.bias"])
        assert torch.equal(saved["kfac"]["critics"]["layers"]["head"]["A"][i - 1],
                           old["kfac"]["critics"]["layers"][f"qf{i}.head"]["A"])
    moments = old["q_optimizer"]["state"]
    assert torch.equal(saved["q_optimizer"]["state"][0]["exp_avg"], torch.stack([moments[0]["exp_avg"],
                                                                                 moments[4]["exp_avg"]]))
    assert saved["q_optimizer"]["param_groups"][0]["params"] == [0, 1, 2, 3]
    # critics split over two parameter groups (--lr-mult) do not pair up by position: refused
    split = copy.deepcopy(old)
    group = split["q_optimizer"]["param_groups"][0]
    split["q_optimizer"]["param_groups"] = [dict(group, params=group["params"][:2]),
                                            dict(group, params=group["params"][2:])]
    with pytest.raises(UserError, match=r"its critics are two networks, .* --eval still plays it$"):
        sac.stack_twin_critics(split, LEGACY)

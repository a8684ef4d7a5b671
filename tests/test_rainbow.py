"""Rainbow: the C51 projection against the paper's loop, noisy layers, learning CartPole, and a Breakout
run that logs, checkpoints and resumes."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from agents import rainbow
from agents.networks import NoisyLinear
from common.events import read_scalars, scalar_tags
from common.errors import UserError


def only_run(logdir: Path) -> Path:
    runs = [p for p in logdir.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def projection_loop(probs, returns, discounts, v_min, v_max, num_atoms):
    """Bellemare et al. (2017), Algorithm 1, atom by atom in float64; an atom landing exactly on
    the support (l == u) keeps its whole mass."""
    delta = (v_max - v_min) / (num_atoms - 1)
    m = np.zeros((len(returns), num_atoms))
    for b in range(len(returns)):
        for i in range(num_atoms):
            tz = min(max(returns[b] + discounts[b] * (v_min + i * delta), v_min), v_max)
            pos = (tz - v_min) / delta
            lo, hi = math.floor(pos), math.ceil(pos)
            if lo == hi:
                m[b, lo] += probs[b, i]
            else:
                m[b, lo] += probs[b, i] * (hi - pos)
                m[b, hi] += probs[b, i] * (pos - lo)
    return m


def test_projection_matches_the_papers_loop():
    torch.manual_seed(0)
    num_atoms, v_min, v_max = 11, -10.0, 10.0
    support = torch.linspace(v_min, v_max, num_atoms, dtype=torch.float64)
    probs = torch.softmax(torch.randn(6, num_atoms, dtype=torch.float64), dim=1)
    # inside the support; pushed past v_max and below v_min (clipped); landing exactly on atoms
    # (discount 1, return 2 = one atom's width); a terminal (discount 0: all mass at the return)
    returns = torch.tensor([0.7, 9.5, -14.0, 2.0, 3.3, -0.25], dtype=torch.float64)
    discounts = torch.tensor([0.97, 0.99, 0.9, 1.0, 0.0, 0.5], dtype=torch.float64)
    ours = rainbow.project(probs, returns, discounts, support)
    expected = projection_loop(probs.numpy(), returns.numpy(), discounts.numpy(), v_min, v_max, num_atoms)
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(ours.sum(1).numpy(), 1.0, atol=1e-12)  # no mass lost
    assert ours[1, -1] > probs[1, -3:].sum() - 1e-9  # what fell past v_max sits on the last atom
    assert ours[4].nonzero().flatten().tolist() == [6, 7]  # 3.3 = 65% at atom 6 (2.0), 35% at 7 (4.0)


def test_noisy_layers_explore_in_training_and_are_their_mean_in_eval():
    cfg = rainbow.prepare(rainbow.Config(env="CartPole-v1"))
    net = rainbow.RainbowNetwork((4,), 2, cfg)
    obs = torch.randn(3, 4)
    first = net(obs)
    net.reset_noise()
    assert not torch.allclose(first, net(obs))  # new noise, new outputs
    net.eval()
    mean = net(obs)
    net.reset_noise()
    assert torch.equal(mean, net(obs))  # noise off
    assert torch.allclose(mean.exp().sum(-1), torch.ones(3, 2))
    net.train()


def test_noisy_layer_is_the_papers_weight_with_and_without_gradients():
    """The layer's output, with and without gradients, is x (mu_w + sigma_w * e_out e_in^T)^T + mu_b +
    sigma_b * e_out (Fortunato et al. 2018, eq. 10, factorised noise), which it forms without building the
    noisy weight, and its gradients are that formula's, hand-written, in float64."""
    torch.manual_seed(0)
    layer = NoisyLinear(7, 5).double()
    x, g = torch.randn(4, 7, dtype=torch.float64, requires_grad=True), torch.randn(4, 5, dtype=torch.float64)
    eo, ei = layer.eps_out, layer.eps_in
    weight = layer.weight_mu + layer.weight_sigma * torch.outer(eo, ei)
    expected = x.detach() @ weight.detach().T + (layer.bias_mu + layer.bias_sigma * eo).detach()
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-12)
    out = layer(x)
    torch.testing.assert_close(out.detach(), expected, rtol=0, atol=1e-12)
    out.backward(g)
    grad_w = g.T @ x.detach()
    torch.testing.assert_close(layer.weight_mu.grad, grad_w, rtol=0, atol=1e-12)
    torch.testing.assert_close(layer.weight_sigma.grad, grad_w * torch.outer(eo, ei), rtol=0, atol=1e-12)
    torch.testing.assert_close(layer.bias_mu.grad, g.sum(0), rtol=0, atol=1e-12)
    torch.testing.assert_close(layer.bias_sigma.grad, g.sum(0) * eo, rtol=0, atol=1e-12)
    torch.testing.assert_close(x.grad, g @ weight.detach(), rtol=0, atol=1e-12)


def test_priorities_are_the_cross_entropy_and_the_loss_their_weighted_mean():
    """Each priority is the cross-entropy -sum_i target_i log p_i(s, a), i.e. KL(target || p) plus the
    target's entropy, as in Dopamine's and Kaixhin's code (with kl=True, --priority kl, the KL); the
    loss is their weighted mean. Checked against the target built and the sums taken atom by atom in
    float64."""
    torch.manual_seed(1)
    cfg = rainbow.prepare(rainbow.Config(env="CartPole-v1"))
    net, target = rainbow.RainbowNetwork((4,), 2, cfg), rainbow.RainbowNetwork((4,), 2, cfg)
    support = rainbow.make_support(cfg, "cpu")
    batch = {"obs": torch.randn(8, 4), "next_obs": torch.randn(8, 4), "actions": torch.randint(0, 2, (8,)),
             "rewards": torch.randn(8), "terminated": torch.rand(8) < 0.3, "discounts": torch.full((8,), 0.99 ** 3),
             "weights": torch.rand(8)}
    net.eval(), target.eval()  # the noise's mean: the same distributions in both computations
    with torch.no_grad():
        log_p, log_next, log_next_target = net(batch["obs"]), net(batch["next_obs"]), target(batch["next_obs"])
    z = [float(v) for v in support.double()]
    v_min, v_max, delta = z[0], z[-1], z[1] - z[0]
    expected, expected_kl = [], []
    for b in range(8):
        q_next = [sum(zi * math.exp(float(log_next[b, a, i])) for i, zi in enumerate(z)) for a in range(2)]
        a_star = max(range(2), key=lambda a: q_next[a])
        gamma = 0.0 if batch["terminated"][b] else float(batch["discounts"][b])
        m = [0.0] * len(z)
        for j, zj in enumerate(z):  # C51's projection, one target atom at a time
            tz = min(max(float(batch["rewards"][b]) + gamma * zj, v_min), v_max)
            pos = (tz - v_min) / delta
            lo, hi = math.floor(pos), math.ceil(pos)
            p_j = math.exp(float(log_next_target[b, a_star, j]))
            if lo == hi:
                m[lo] += p_j
            else:
                m[lo] += p_j * (hi - pos)
                m[hi] += p_j * (pos - lo)
        a = int(batch["actions"][b])
        log_q = [float(log_p[b, a, i]) for i in range(len(z))]
        cross_entropy = -sum(mi * lq for mi, lq in zip(m, log_q))
        entropy = -sum(mi * math.log(mi) for mi in m if mi > 0)
        kl = sum(mi * (math.log(mi) - lq) for mi, lq in zip(m, log_q) if mi > 0)
        assert cross_entropy == pytest.approx(kl + entropy, rel=1e-9)
        expected.append(cross_entropy)
        expected_kl.append(kl)
    for kl, reference in ((False, expected), (True, expected_kl)):  # --priority cross-entropy, then kl
        loss, priorities, _ = rainbow.categorical_loss(net, target, batch, support, kl=kl)
        torch.testing.assert_close(priorities.double(), torch.tensor(reference, dtype=torch.float64),
                                   rtol=1e-5, atol=1e-5)
        weighted = sum(float(w) * e for w, e in zip(batch["weights"], reference)) / 8
        assert loss.item() == pytest.approx(weighted, rel=1e-5)


def test_a_checkpoint_from_before_the_priority_field_goes_on_with_the_kl():
    """Versions before --priority prioritized by the KL: their checkpoints resume with it."""
    from common.config import config_from_checkpoint

    saved = {"config": {"env": "CartPole-v1", "priority_alpha": 0.5}}
    assert config_from_checkpoint(rainbow.Config, saved, "old.pt").priority == "kl"
    saved["config"]["priority"] = "cross-entropy"
    assert config_from_checkpoint(rainbow.Config, saved, "new.pt").priority == "cross-entropy"
    assert rainbow.Config(env="CartPole-v1").priority == "cross-entropy"


def test_presets(capsys):
    atari = rainbow.prepare(rainbow.Config(env="Breakout"))
    assert (atari.learning_rate, atari.adam_eps, atari.n_step, atari.learning_starts, atari.target_network_frequency,
            atari.v_min, atari.v_max, atari.noisy_sigma) == (6.25e-5, 1.5e-4, 3, 20_000, 8_000, -10.0, 10.0, 0.5)
    assert atari.rmsprop_alpha is None
    der = rainbow.prepare(rainbow.Config(env="Breakout", preset="atari100k"))
    assert (der.total_timesteps, der.n_step, der.train_frequency, der.target_network_frequency,
            der.learning_starts, der.learning_rate, der.torso) == (100_000, 20, 1, 2_000, 1_600, 1e-4, "data-efficient")
    rms = rainbow.prepare(rainbow.Config(env="Breakout", optimizer="rmsproptf"))
    assert (rms.rmsprop_alpha, rms.rmsprop_eps, rms.adam_eps) == (0.95, 1e-5, None)
    with pytest.raises(UserError, match="--preset"):
        rainbow.prepare(rainbow.Config(env="CartPole-v1", preset="atari100k"))
    with pytest.raises(UserError, match="--adam-eps"):
        rainbow.prepare(rainbow.Config(env="Breakout", optimizer="rmsproptf", adam_eps=1e-3))


@pytest.fixture(scope="module", params=[1, 2], ids=["seed1", "seed2"])
def cartpole_run(request, tmp_path_factory):
    """CartPole-v1 with the classic preset and nothing else typed but the seed."""
    logdir = tmp_path_factory.mktemp(f"rainbow_cartpole{request.param}")
    rainbow.main(["--env", "CartPole-v1", "--seed", str(request.param), "--logdir", str(logdir)])
    return only_run(logdir)


def test_rainbow_learns_cartpole(cartpole_run):
    """What a user would check: the final checkpoint, evaluated with the noise off for 10 episodes."""
    saved = torch.load(cartpole_run / "final.pt", weights_only=True)
    assert saved["global_step"] <= 30_000
    scores = rainbow.main(["--eval", str(cartpole_run / "final.pt"), "--eval-episodes", "10"])
    assert len(scores) == 10
    # CartPole-v0's "solved" threshold, far above random play's ~22
    assert np.mean(scores) >= 195, f"final checkpoint evaluates at {np.mean(scores):.1f} < 195: {scores}"
    assert len(read_scalars(cartpole_run, "eval/episodic_return")) == 3
    assert (cartpole_run / "best.pt").is_file()


BREAKOUT = ["--env", "Breakout", "--buffer-size", "1000", "--learning-starts", "500", "--batch-size", "8",
            "--checkpoint-interval", "1000", "--log-interval", "250", "--target-network-frequency", "500",
            "--eval-interval", "0"]
TAGS = ["charts/episodic_return", "charts/episodic_length", "charts/SPS", "charts/beta", "charts/learning_rate",
        "losses/loss", "losses/q_values", "losses/grad_norm"]


def test_breakout_logs_checkpoints_and_resumes(tmp_path):
    rainbow.main([*BREAKOUT, "--total-timesteps", "2000", "--logdir", str(tmp_path)])
    run = only_run(tmp_path)
    assert run.name.startswith("ALE_Breakout-v5__rainbow__1__")
    assert set(TAGS) <= set(scalar_tags(run))
    saved = torch.load(run / "checkpoint.pt", weights_only=True)
    assert saved["global_step"] == 2000
    betas = [v for _, _, v in read_scalars(run, "charts/beta")]
    # annealed from 0.4 at learning_starts to 1 at the run's budget
    assert betas[0] == pytest.approx(0.4) and betas[-1] == pytest.approx(1.0) and betas == sorted(betas)

    rainbow.main(["--resume", str(run / "checkpoint.pt"), "--total-timesteps", "3000"])
    assert only_run(tmp_path) == run
    steps = [s for _, s, _ in read_scalars(run, "losses/loss")]
    assert steps[-1] == 3000 and len(steps) == len(set(steps))  # continued, not restarted at 0
    resumed = torch.load(run / "final.pt", weights_only=True)
    assert resumed["global_step"] == 3000 and resumed["beta_origin"] == 500
    key = "advantage.2.weight_mu"
    assert not torch.equal(resumed["net"][key], saved["net"][key])
    first_state = next(iter(saved["optimizer"]["state"].values()))["step"]
    later_state = next(iter(resumed["optimizer"]["state"].values()))["step"]
    assert later_state > first_state


def test_breakout_resumes_with_its_saved_replay_memory_and_priorities(tmp_path, capsys):
    """--save-replay: checkpoint.pt holds the memory and the priorities the updates wrote (final.pt does
    not), and --resume learns from it at once instead of refilling it for --learning-starts steps."""
    rainbow.main([*BREAKOUT, "--total-timesteps", "1000", "--save-replay", "--logdir", str(tmp_path)])
    run = only_run(tmp_path)
    saved = torch.load(run / "checkpoint.pt", weights_only=True)
    leaves = saved["replay"]["sampler"]["leaves"]
    assert saved["replay"]["size"] == 1000 and len(leaves) == 1000
    assert len(set(leaves[leaves > 0].tolist())) > 100  # the losses' priorities, not one value for all
    assert "replay" not in torch.load(run / "final.pt", weights_only=True)

    capsys.readouterr()
    rainbow.main(["--resume", str(run / "checkpoint.pt"), "--total-timesteps", "1250"])
    assert "at step 1000; with its replay memory" in capsys.readouterr().err
    steps = [s for _, s, _ in read_scalars(run, "losses/loss")]
    assert steps[-1] == 1250  # a refill would have made no update before step 1,500
    resumed = torch.load(run / "checkpoint.pt", weights_only=True)
    assert resumed["global_step"] == 1250 and resumed["replay"]["size"] == 1000


def test_learn_is_one_update_that_returns_tensors_and_the_whole_batchs_priorities():
    """learn(): new noise in both networks, one step; the loss, the priorities of every sample (over the
    micro-batches) and the mean Q come back as tensors; the gradient norm only when clipped or asked."""
    from common.precision import Precision

    torch.manual_seed(2)
    cfg = rainbow.prepare(rainbow.Config(env="CartPole-v1", batch_size=8, grad_accum=2, max_grad_norm=0.0))
    net, target = rainbow.RainbowNetwork((4,), 2, cfg), rainbow.RainbowNetwork((4,), 2, cfg)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    amp, support = Precision.of("off", torch.device("cpu")), rainbow.make_support(cfg, "cpu")
    batch = {"obs": torch.randn(8, 4), "next_obs": torch.randn(8, 4), "actions": torch.randint(0, 2, (8,)),
             "rewards": torch.randn(8), "terminated": torch.rand(8) < 0.3, "discounts": torch.full((8,), 0.99 ** 3),
             "weights": torch.rand(8)}
    before = {k: v.clone() for k, v in net.state_dict().items()}
    noise = target.advantage[2].eps_out.clone()
    loss, priorities, q_mean, grad_norm = rainbow.learn(net, target, optimizer, amp, batch, support, cfg)
    assert all(isinstance(t, torch.Tensor) and not t.requires_grad for t in (loss, priorities, q_mean))
    assert priorities.shape == (8,) and (priorities > 0).all() and grad_norm is None
    assert loss.item() == pytest.approx((batch["weights"] * priorities).mean().item(), rel=1e-5)
    assert not torch.equal(noise, target.advantage[2].eps_out)  # the target's noise is new too
    assert not torch.equal(before["advantage.2.weight_mu"], net.state_dict()["advantage.2.weight_mu"])
    # unclipped: the norm is measured when asked (the round before a log), as DQN's
    _, _, _, grad_norm = rainbow.learn(net, target, optimizer, amp, batch, support, cfg, measure_norm=True)
    assert isinstance(grad_norm, torch.Tensor) and grad_norm.item() > 0
    cfg.max_grad_norm = 10.0
    _, _, _, grad_norm = rainbow.learn(net, target, optimizer, amp, batch, support, cfg)
    assert isinstance(grad_norm, torch.Tensor)


def test_a_checkpoint_of_the_version_before_the_session_resumes_and_evaluates(tmp_path, capsys):
    """tests/data/v0_checkpoints/rainbow.pt (written before the run state and the session): it resumes
    and --eval prints what that version printed; a new checkpoint has the same keys."""
    import json
    import shutil

    legacy = Path(__file__).parent / "data" / "v0_checkpoints" / "rainbow.pt"
    folder = tmp_path / "legacy"
    folder.mkdir()
    shutil.copy(legacy, folder / "checkpoint.pt")
    (folder / "config.json").write_text(json.dumps({}))
    rainbow.main(["--eval", str(folder / "checkpoint.pt"), "--eval-episodes", "2"])
    assert "CartPole-v1: 2 episodes, score 10.50 +/- 1.50 (min 9.0, max 12.0)" in capsys.readouterr().out
    rainbow.main(["--resume", str(folder / "checkpoint.pt"), "--total-timesteps", "2100"])  # 500 to refill
    old = torch.load(legacy, weights_only=True)
    new = torch.load(folder / "final.pt", weights_only=True)
    assert new["global_step"] == 2100 and new["beta_origin"] == old["beta_origin"]
    assert set(new) == set(old)
    step = lambda saved: next(iter(saved["optimizer"]["state"].values()))["step"]  # noqa: E731
    assert step(new) == step(old) + 100  # its optimizer state continued

"""--compile: each trainer's compiled update gives the eager update's parameters to float tolerance, on the
CPU (inductor's C++ kernels), from the same weights, batch, noise and optimizer; and the flag is refused
where it cannot run."""
import copy
import shutil

import pytest
import torch
import torch._inductor.config as inductor_config

from agents import dqn, ppo, rainbow, sac
from common.compiled import compiled
from common.distributed import World
from common.precision import Precision
from gans import dcgan

pytestmark = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                reason="inductor needs a C++ compiler on the CPU")

CPU = torch.device("cpu")
OFF = Precision.of("off", CPU)


@pytest.fixture(autouse=True)
def fresh_compiler():
    """Eager's random draws inside compiled code (SAC's rsample) rather than inductor's own generator, and
    no graphs cached from another test."""
    torch._dynamo.reset()
    with inductor_config.patch(fallback_random=True):
        yield
    torch._dynamo.reset()


def assert_same_parameters(eager: torch.nn.Module, compiled_: torch.nn.Module, moved_from: dict):
    moved = 0
    for (name, a), (_, b) in zip(eager.named_parameters(), compiled_.named_parameters()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")
        moved += not torch.equal(a, moved_from[name])
    assert moved > 0  # the update did something to compare


def test_dqn_update_compiled_equals_eager():
    cfg = dqn.prepare(dqn.Config(env="CartPole-v1", hidden_sizes=(32, 32)))
    torch.manual_seed(0)
    net = dqn.QNetwork((4,), 2, cfg.hidden_sizes)
    target = copy.deepcopy(net)
    batch = {"obs": torch.randn(64, 4), "next_obs": torch.randn(64, 4), "actions": torch.randint(0, 2, (64,)),
             "rewards": torch.randn(64), "terminated": torch.rand(64) < 0.2}
    start = {k: v.clone() for k, v in net.named_parameters()}
    nets = {}
    for name, loss_fn in (("eager", dqn.td_loss), ("compiled", compiled(dqn.td_loss, True))):
        q = copy.deepcopy(net)
        optimizer = dqn.make_optimizer(cfg, q.parameters())
        for _ in range(3):
            loss, q_mean, _ = dqn.learn(q, target, optimizer, OFF, batch, cfg, loss_fn=loss_fn)
        nets[name] = q
    assert_same_parameters(nets["eager"], nets["compiled"], start)
    # acting: the compiled network picks the eager one's greedy actions
    obs = torch.randn(5, 4)
    assert torch.equal(compiled(nets["eager"], True)(obs).argmax(1), nets["eager"](obs).argmax(1))


def test_rainbow_update_compiled_equals_eager():
    cfg = rainbow.prepare(rainbow.Config(env="CartPole-v1", batch_size=16))
    torch.manual_seed(1)
    net = rainbow.RainbowNetwork((4,), 2, cfg)
    target = copy.deepcopy(net)
    support = rainbow.make_support(cfg, CPU)
    batch = {"obs": torch.randn(16, 4), "next_obs": torch.randn(16, 4), "actions": torch.randint(0, 2, (16,)),
             "rewards": torch.randn(16), "terminated": torch.rand(16) < 0.3, "discounts": torch.full((16,), 0.97),
             "weights": torch.rand(16)}
    start = {k: v.clone() for k, v in net.named_parameters()}
    nets, kls = {}, {}
    for name, loss_fn in (("eager", rainbow.categorical_loss), ("compiled", compiled(rainbow.categorical_loss, True))):
        n, t = copy.deepcopy(net), copy.deepcopy(target)
        optimizer = torch.optim.Adam(n.parameters(), lr=1e-3, eps=1.5e-4)
        torch.manual_seed(7)  # the same noise in both runs (drawn outside the loss)
        for _ in range(2):
            _, kls[name], _, _ = rainbow.learn(n, t, optimizer, OFF, batch, support, cfg, loss_fn=loss_fn)
        nets[name] = n
    assert_same_parameters(nets["eager"], nets["compiled"], start)
    torch.testing.assert_close(kls["compiled"], kls["eager"], rtol=1e-4, atol=1e-5)  # the new priorities
    # acting: the compiled forward picks the eager one's actions (noise at its mean)
    net = nets["eager"].eval()
    obs = torch.randn(6, 4).numpy()
    greedy = rainbow.act(net, obs, support, CPU)
    assert (rainbow.act(net, obs, support, CPU, forward=compiled(net, True)) == greedy).all()


def test_ppo_update_compiled_equals_eager():
    cfg = ppo.prepare(ppo.Config(env="CartPole-v1", num_envs=2, num_steps=16, num_minibatches=2, update_epochs=2))
    env_space = __import__("gymnasium").spaces.Discrete(2)
    torch.manual_seed(2)
    agent = ppo.Agent((4,), env_space, cfg.hidden_sizes)
    n = 32
    batch = {"obs": torch.randn(n, 4), "actions": torch.randint(0, 2, (n,)), "logprobs": torch.full((n,), -0.69),
             "values": torch.randn(n), "advantages": torch.randn(n), "returns": torch.randn(n),
             "valid": torch.rand(n) < 0.9}
    start = {k: v.clone() for k, v in agent.named_parameters()}
    agents, stats = {}, {}
    for name, loss_fn in (("eager", ppo.ppo_loss), ("compiled", compiled(ppo.ppo_loss, True))):
        a = copy.deepcopy(agent)
        optimizer = ppo.make_optimizer(cfg, a.parameters())
        for clip in (0.2, 0.15):  # an annealed clip: a new float, not a new graph
            stats[name] = ppo.update(a, optimizer, OFF, batch, clip, cfg, World(), torch.Generator().manual_seed(3),
                                     loss_fn)
        agents[name] = a
    assert_same_parameters(agents["eager"], agents["compiled"], start)
    for k in ("policy_loss", "value_loss", "entropy", "approx_kl"):
        torch.testing.assert_close(stats["compiled"][k], stats["eager"][k], rtol=1e-4, atol=1e-5)


def test_sac_update_compiled_equals_eager():
    cfg = sac.prepare(sac.Config(env="Pendulum-v1", optimizer="adam", hidden_sizes=(32, 32)))
    torch.manual_seed(3)
    actor, critics = sac.Actor(3, 1, cfg.hidden_sizes), sac.Critics(3, 1, cfg.hidden_sizes)
    batch = {"obs": torch.randn(32, 3), "next_obs": torch.randn(32, 3), "actions": torch.rand(32, 1) * 2 - 1,
             "rewards": torch.randn(32), "terminated": torch.rand(32) < 0.1, "discounts": torch.full((32,), 0.99)}
    start = {**{f"actor.{k}": v.clone() for k, v in actor.named_parameters()},
             **{f"critics.{k}": v.clone() for k, v in critics.named_parameters()}}
    both = {}
    for enabled in (False, True):
        a, c = copy.deepcopy(actor), copy.deepcopy(critics)
        target = copy.deepcopy(c).requires_grad_(False)
        kfac = sac.Preconditioners(cfg, c, a)
        q_opt, actor_opt = kfac.optimizer(list(c.parameters()), cfg.q_lr, "critics"), \
            kfac.optimizer(list(a.parameters()), cfg.policy_lr, "actor")
        log_alpha = torch.zeros(1, requires_grad=True)
        alpha_opt = torch.optim.Adam([log_alpha], lr=cfg.q_lr)
        losses = sac.Losses(enabled)
        torch.manual_seed(11)  # the same actions sampled in both (eager's generator, see the fixture)
        for _ in range(2):
            out = sac.update(cfg, batch, a, c, target, kfac, q_opt, actor_opt, log_alpha, alpha_opt, -1.0, losses)
        both[enabled] = (torch.nn.ModuleDict({"actor": a, "critics": c}), target, log_alpha, out)
    eager, comp = both[False], both[True]
    assert_same_parameters(eager[0], comp[0], start)
    torch.testing.assert_close(comp[1].state_dict(), eager[1].state_dict(), rtol=1e-4, atol=1e-5)  # Polyak
    torch.testing.assert_close(comp[2], eager[2], rtol=1e-4, atol=1e-6)  # the temperature
    for k in ("qf1_loss", "actor_loss", "q_values"):
        torch.testing.assert_close(comp[3][k], eager[3][k], rtol=1e-4, atol=1e-5)


def test_dcgan_step_compiled_equals_eager():
    cfg = dcgan.resolve(dcgan.Config(dataset="grid25", g_width=32, d_width=32))
    torch.manual_seed(4)
    base = dcgan.build_models(cfg, CPU)
    real = torch.randn(cfg.batch_size, 2)
    start = {f"G.{k}": v.clone() for k, v in base.G.named_parameters()}
    runs = {}
    for enabled in (False, True):
        cfg.compile = enabled
        m = dcgan.build_models(cfg, CPU)
        m.G.load_state_dict(base.G.state_dict())
        m.D.load_state_dict(base.D.state_dict())
        torch.manual_seed(5)  # the same noise z in both
        for _ in range(2):
            stats = dcgan.train_step(m, lambda: real, cfg.batch_size, cfg.z_dim, CPU, cfg.d_steps)
        runs[enabled] = (m, stats)
    eager, comp = runs[False], runs[True]
    assert_same_parameters(torch.nn.ModuleDict({"G": eager[0].G}), torch.nn.ModuleDict({"G": comp[0].G}), start)
    for a, b in zip(eager[0].D.parameters(), comp[0].D.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(comp[1], eager[1], rtol=1e-4, atol=1e-5)
    assert comp[0].g is not comp[0].G and eager[0].g is eager[0].G  # compiled only when asked


def test_compile_refused_where_it_cannot_run(tmp_path, monkeypatch, capsys):
    # SAC's K-FAC captures activations with layer hooks in some updates only
    with pytest.raises(SystemExit) as e:
        sac.main(["--env", "Pendulum-v1", "--optimizer", "kfac", "--compile", "--logdir", str(tmp_path)])
    assert e.value.code == 2 and "--compile" in capsys.readouterr().err
    # no C++ compiler for inductor on the CPU
    monkeypatch.setenv("CXX", "no-such-compiler")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(SystemExit) as e:
        dqn.main(["--env", "CartPole-v1", "--compile", "--device", "cpu", "--logdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "C++ compiler" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # nothing written

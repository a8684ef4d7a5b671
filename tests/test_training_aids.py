"""Training aids in every trainer: --grad-accum gives the update of the whole batch (each trainer
run twice from one seed, its final weights compared), --amp (bf16 on the CPU, fp16 refused, the scaler
in checkpoints), --optimizer-switch (SWATS's SGD phase reached, its rate following the schedule),
--lr-schedule in PPO (per iteration) and in the DCGAN trainer (both networks, a changed lr on resume)."""
from pathlib import Path

import pytest
import torch

from agents import dqn, ppo, rainbow, sac
from common.events import read_scalars
from gans import dcgan


def only_run(logdir: Path) -> Path:
    runs = [p for p in logdir.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def final(logdir: Path) -> dict:
    return torch.load(only_run(logdir) / "final.pt", weights_only=True)


def assert_close_weights(a: dict, b: dict, rtol: float = 1e-4, atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if a[k].is_floating_point():
            assert torch.allclose(a[k], b[k], rtol=rtol, atol=atol), (k, (a[k] - b[k]).abs().max().item())
        else:
            assert torch.equal(a[k], b[k]), k


def expect_user_error(capsys, main, argv, says: str) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error:") and says in err[0], err


# ---------------------------------------------------------------------------------------------
# --grad-accum: K micro-batches, the whole batch's update
# ---------------------------------------------------------------------------------------------

# 25 updates: one every 4 steps for the 100 steps after learning starts
DQN_SHORT = ["--env", "CartPole-v1", "--total-timesteps", "700", "--learning-starts", "600", "--train-frequency", "4",
             "--gradient-steps", "1", "--eval-interval", "0"]


def test_dqn_grad_accum_is_the_whole_batchs_update(tmp_path):
    # 25 updates of batch 64 (the classic preset's): once whole, once in 4 slices of 16
    dqn.main([*DQN_SHORT, "--logdir", str(tmp_path / "whole")])
    dqn.main([*DQN_SHORT, "--grad-accum", "4", "--logdir", str(tmp_path / "sliced")])
    whole, sliced = final(tmp_path / "whole"), final(tmp_path / "sliced")
    assert_close_weights(whole["q_net"], sliced["q_net"])
    # the weights did move (the same seed's untrained network differs): not two untrained networks compared
    dqn.main([*DQN_SHORT, "--total-timesteps", "600", "--logdir", str(tmp_path / "untrained")])
    start = final(tmp_path / "untrained")["q_net"]
    assert not torch.allclose(start["head.weight"], whole["q_net"]["head.weight"], atol=1e-4)


def test_rainbow_grad_accum_is_the_whole_batchs_update_and_priorities(tmp_path):
    # 50 updates of batch 64 under one noise draw each; the priorities of all 64 come back
    args = ["--env", "CartPole-v1", "--total-timesteps", "650", "--learning-starts", "600", "--eval-interval", "0"]
    rainbow.main([*args, "--logdir", str(tmp_path / "whole")])
    rainbow.main([*args, "--grad-accum", "2", "--logdir", str(tmp_path / "sliced")])
    whole, sliced = final(tmp_path / "whole"), final(tmp_path / "sliced")
    assert_close_weights(whole["net"], sliced["net"])


def test_ppo_grad_accum_normalizes_by_the_whole_minibatch(tmp_path):
    # the classic preset: one minibatch of 8 x 32 = 256 per epoch, 20 epochs; in 4 slices of 64
    args = ["--env", "CartPole-v1", "--total-timesteps", "512", "--eval-interval", "0"]
    ppo.main([*args, "--logdir", str(tmp_path / "whole")])
    ppo.main([*args, "--grad-accum", "4", "--logdir", str(tmp_path / "sliced")])
    whole, sliced = final(tmp_path / "whole"), final(tmp_path / "sliced")
    assert_close_weights(whole["agent"], sliced["agent"], rtol=1e-3, atol=1e-5)
    values = [v for _, _, v in read_scalars(only_run(tmp_path / "sliced"), "losses/approx_kl")]
    whole_values = [v for _, _, v in read_scalars(only_run(tmp_path / "whole"), "losses/approx_kl")]
    assert values == pytest.approx(whole_values, rel=1e-3, abs=1e-7)  # the logged parts add up too


def test_dcgan_grad_accum_is_the_whole_batchs_update(tmp_path):
    args = ["--dataset", "ring8", "--steps", "20", "--log-every", "10", "--sample-every", "20", "--save-every", "20",
            "--device", "cpu"]
    dcgan.main([*args, "--logdir", str(tmp_path / "whole")])
    dcgan.main([*args, "--grad-accum", "8", "--logdir", str(tmp_path / "sliced")])
    whole, sliced = final(tmp_path / "whole"), final(tmp_path / "sliced")
    assert_close_weights(whole["G"], sliced["G"])
    assert_close_weights(whole["D"], sliced["D"])
    for tag in ("losses/d_loss", "losses/g_loss", "charts/d_real"):
        a = [v for _, _, v in read_scalars(only_run(tmp_path / "whole"), tag)]
        b = [v for _, _, v in read_scalars(only_run(tmp_path / "sliced"), tag)]
        assert a == pytest.approx(b, rel=1e-4), tag


@pytest.mark.parametrize("main, argv, says", [
    (dqn.main, ["--env", "CartPole-v1", "--grad-accum", "3"], "--grad-accum 3 does not divide --batch-size 64"),
    (rainbow.main, ["--env", "CartPole-v1", "--grad-accum", "0"], "--grad-accum must be at least 1"),
    (ppo.main, ["--env", "CartPole-v1", "--grad-accum", "3"], "does not divide the minibatch of 256"),
    (dcgan.main, ["--dataset", "ring8", "--grad-accum", "7"], "--grad-accum 7 does not divide --batch-size 256"),
])
def test_grad_accum_that_does_not_divide_the_batch_is_one_line(capsys, tmp_path, main, argv, says):
    expect_user_error(capsys, main, [*argv, "--logdir", str(tmp_path)], says)


# ---------------------------------------------------------------------------------------------
# --amp
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("main, argv", [
    (dqn.main, ["--env", "CartPole-v1"]), (rainbow.main, ["--env", "CartPole-v1"]),
    (ppo.main, ["--env", "CartPole-v1"]), (dcgan.main, ["--dataset", "ring8"]),
])
def test_fp16_on_the_cpu_is_refused_in_one_line(capsys, tmp_path, main, argv):
    expect_user_error(capsys, main, [*argv, "--amp", "fp16", "--device", "cpu", "--logdir", str(tmp_path)],
                      "--amp fp16 needs a CUDA GPU")
    assert not any(tmp_path.iterdir())  # refused before a run folder was made


def test_bf16_autocast_trains_float32_weights_and_resumes(tmp_path):
    # bfloat16 on the CPU: the CUDA path's code (autocast, the disabled scaler's state) exercised here
    args = [*DQN_SHORT, "--checkpoint-interval", "650", "--amp", "bf16", "--device", "cpu", "--logdir", str(tmp_path)]
    dqn.main(args)
    saved = final(tmp_path)
    assert [int(s["step"]) for s in saved["optimizer"]["state"].values()] == [25] * 6  # it trained
    assert saved["config"]["amp"] == "bf16" and "grad_scaler" in saved
    assert all(v.dtype == torch.float32 for v in saved["q_net"].values())
    assert all(torch.isfinite(v).all() for v in saved["q_net"].values())
    # under the autocast the network's matrix products are bfloat16
    from common.precision import Precision

    net = dqn.QNetwork((4,), 2, (8,))
    with Precision.of("bf16", torch.device("cpu")).autocast():
        assert net(torch.zeros(1, 4)).dtype is torch.bfloat16
    with Precision.of("auto", torch.device("cpu")).autocast():  # auto is float32 on the CPU
        assert net(torch.zeros(1, 4)).dtype is torch.float32
    dqn.main(["--resume", str(only_run(tmp_path) / "checkpoint.pt"), "--total-timesteps", "800"])
    assert final(tmp_path)["global_step"] == 800


# ---------------------------------------------------------------------------------------------
# --optimizer-switch sgd@STEP
# ---------------------------------------------------------------------------------------------


def test_optimizer_switch_moves_adam_to_sgd_at_its_step(tmp_path):
    # 25 updates; the switch after the 10th: every tensor in its SGD phase, with the rate Adam estimated
    dqn.main([*DQN_SHORT, "--optimizer", "adam", "--optimizer-switch", "sgd@10", "--logdir", str(tmp_path)])
    opt = final(tmp_path)["optimizer"]
    assert opt["param_groups"][0]["switch_step"] == 10
    states = list(opt["state"].values())
    assert states and all(s["sgd"] and int(s["step"]) == 25 and "momentum_buffer" in s for s in states)
    assert all(float(s["sgd_lr"]) > 0 for s in states)


def test_optimizer_switch_in_sac_switches_kfacs_base_adam(tmp_path):
    sac.main(["--env", "Pendulum-v1", "--total-timesteps", "300", "--learning-starts", "200", "--eval-interval", "0",
              "--kfac-combine", "base", "--optimizer-switch", "sgd@50", "--logdir", str(tmp_path)])
    saved = final(tmp_path)
    for name in ("q_optimizer", "actor_optimizer"):
        state = saved[name]["state"]  # the base optimizer's: K-FAC preconditions its gradients
        assert sum(s["sgd"] for s in state.values()) >= len(state) // 2, name
        # each at the positive rate its Adam steps estimated; a tensor whose estimate is not positive
        # (Adam's steps climbing the preconditioned gradient) stays with Adam rather than ascend
        assert all(float(s["sgd_lr"]) > 0 if s["sgd"] else float(s["lam"]) <= 0 for s in state.values()), name


def test_optimizer_switch_is_refused_where_kfac_steps_itself(tmp_path, capsys):
    # eigen-adam (the default) and graft are Adam inside K-FAC: there is no plain optimizer to switch
    with pytest.raises(SystemExit) as exit_:
        sac.main(["--env", "Pendulum-v1", "--optimizer-switch", "sgd@50", "--logdir", str(tmp_path)])
    assert exit_.value.code == 2
    assert "--kfac-combine eigen-adam" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_optimizer_switch_follows_the_lr_schedule_after_the_switch():
    import optim

    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = optim.build("adam", [w], "sgd@1", lr=0.1)
    w.grad = torch.tensor([0.5, 0.25])
    opt.step()  # Adam's step, then the switch
    sgd_lr = float(opt.state[w]["sgd_lr"])
    before = w.detach().clone()
    opt.param_groups[0]["lr"] = 0.05  # a schedule halves the lr: SGD's rate halves with it
    opt.step()
    momentum = torch.tensor([0.5, 0.25])  # the first SGD step's buffer is the gradient
    assert torch.allclose(w.detach(), before - (1 - 0.9) * sgd_lr * 0.5 * momentum, rtol=1e-6)


@pytest.mark.parametrize("main, argv, says", [
    (dqn.main, ["--env", "CartPole-v1", "--optimizer-switch", "sgd@100"], "rmsproptf is not Adam"),
    (ppo.main, ["--env", "CartPole-v1", "--optimizer-switch", "adam@100"], "write sgd@STEP"),
    (dcgan.main, ["--dataset", "ring8", "--g-optimizer", "rmsprop", "--optimizer-switch", "sgd@5"],
     "neither --g-optimizer rmsprop nor --d-optimizer rmsprop is Adam"),
])
def test_optimizer_switch_errors_are_one_line(capsys, tmp_path, main, argv, says):
    if main is dqn.main:
        argv = [*argv, "--optimizer", "rmsproptf"]
    expect_user_error(capsys, main, [*argv, "--logdir", str(tmp_path)], says)


# ---------------------------------------------------------------------------------------------
# --lr-schedule in PPO and the DCGAN trainer
# ---------------------------------------------------------------------------------------------


def test_ppo_schedule_counts_iterations(tmp_path):
    # 8 iterations of 256 steps; cosine over them, logged at the end of each iteration (its lr)
    ppo.main(["--env", "CartPole-v1", "--total-timesteps", "2048", "--eval-interval", "0", "--lr-schedule", "cosine",
              "--logdir", str(tmp_path)])
    import math

    lr = ppo.CLASSIC["learning_rate"]
    got = [v for _, _, v in read_scalars(only_run(tmp_path), "charts/learning_rate")]
    assert got == pytest.approx([lr * 0.5 * (1 + math.cos(math.pi * i / 8)) for i in range(8)], rel=1e-6)
    assert final(tmp_path)["lr_schedule"]["spec"] == "cosine"


def test_ppo_default_schedule_is_baselines_anneal(tmp_path):
    ppo.main(["--env", "CartPole-v1", "--total-timesteps", "1024", "--eval-interval", "0", "--logdir", str(tmp_path)])
    lr = ppo.CLASSIC["learning_rate"]
    got = [v for _, _, v in read_scalars(only_run(tmp_path), "charts/learning_rate")]
    assert got == pytest.approx([(1.0 - i / 4) * lr for i in range(4)], rel=1e-7)  # CleanRL's frac * lr


def test_dcgan_schedule_moves_both_networks_and_a_changed_lr_scales_it_on_resume(tmp_path):
    import math

    args = ["--dataset", "ring8", "--steps", "20", "--log-every", "1", "--sample-every", "20", "--save-every", "10",
            "--lr-schedule", "cosine", "--device", "cpu", "--logdir", str(tmp_path)]
    dcgan.main([*args[:-1], str(tmp_path / "straight")])
    lr = dcgan.MIXTURE_PRESET["g_lr"]
    cosine = [lr * 0.5 * (1 + math.cos(math.pi * t / 20)) for t in range(20)]
    got = [v for _, _, v in read_scalars(only_run(tmp_path / "straight"), "charts/learning_rate")]
    assert got == pytest.approx(cosine, rel=1e-6)  # logged at step t + 1: the lr its update used
    saved = final(tmp_path / "straight")
    assert saved["lr_schedule"]["spec"] == "cosine"
    assert saved["d_opt"]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)  # D's lr followed it too

    # stopped at step 10, resumed with --g-lr doubled: the rest of G's cosine is twice as high
    dcgan.main([*args[:-1], str(tmp_path / "resumed"), "--steps", "10"])
    folder = only_run(tmp_path / "resumed")
    dcgan.main(["--resume", str(folder / "checkpoint.pt"), "--steps", "20", "--g-lr", str(2 * lr)])
    got = dict((s, v) for _, s, v in read_scalars(folder, "charts/learning_rate"))
    assert [got[t + 1] for t in range(10, 20)] == pytest.approx([2 * c for c in cosine[10:]], rel=1e-6)


# ---------------------------------------------------------------------------------------------
# --lr-mult in PPO and the DCGAN trainer
# ---------------------------------------------------------------------------------------------


def test_ppo_lr_mult_groups_the_critic_and_the_schedule_keeps_the_ratio(tmp_path, capsys):
    ppo.main(["--env", "CartPole-v1", "--total-timesteps", "1024", "--eval-interval", "0", "--lr-mult", "critic=0.5",
              "--lr-schedule", "cosine:final=0.1", "--logdir", str(tmp_path)])
    assert "critic x0.5" in capsys.readouterr().err
    groups = final(tmp_path)["optimizer"]["param_groups"]
    lrs = sorted(g["lr"] for g in groups)
    # at cosine's end, both still in ratio
    assert len(lrs) == 2 and lrs[0] == pytest.approx(0.5 * lrs[1]) and lrs[1] > 0


def test_dcgan_lr_mult_reaches_into_either_network(tmp_path, capsys):
    # the generator's output layer at a tenth of --g-lr, named through its network (D has a net.6 too)
    dcgan.main(["--dataset", "ring8", "--steps", "4", "--log-every", "2", "--sample-every", "4", "--save-every", "4",
                "--lr-schedule", "constant", "--lr-mult", "G.net.6=0.1", "--device", "cpu", "--logdir", str(tmp_path)])
    saved = final(tmp_path)
    lr = dcgan.MIXTURE_PRESET["g_lr"]
    assert sorted(g["lr"] for g in saved["g_opt"]["param_groups"]) == pytest.approx([0.1 * lr, lr])
    assert [g["lr"] for g in saved["d_opt"]["param_groups"]] == pytest.approx([lr])
    capsys.readouterr()
    expect_user_error(capsys, dcgan.main,
                      ["--dataset", "ring8", "--lr-mult", "trunk=0.1", "--logdir", str(tmp_path / "x")],
                      "'trunk' matches no parameter; the top-level modules are D, G, net")


def test_an_earlier_versions_dcgan_checkpoint_resumes_with_its_flags(tmp_path):
    # --lr-decay linear and --amp (a bool) as an earlier version saved them, with no schedule state and
    # the optimizers' lr where the decay had taken them: the schedule goes on from the config's lr
    from common import checkpoint

    dcgan.main(["--dataset", "ring8", "--steps", "5", "--log-every", "1", "--sample-every", "5", "--save-every", "5",
                "--device", "cpu", "--logdir", str(tmp_path)])
    folder = only_run(tmp_path)
    old = torch.load(folder / "checkpoint.pt", weights_only=True)
    assert old["step"] == 5
    old["config"].update(amp=True, lr_decay="linear")
    del old["config"]["lr_schedule"], old["lr_schedule"]
    for opt in ("g_opt", "d_opt"):
        for group in old[opt]["param_groups"]:
            group.pop("initial_lr", None)
    checkpoint.save(folder / "checkpoint.pt", old, kind="dcgan")
    (folder / "final.pt").unlink()
    dcgan.main(["--resume", str(folder / "checkpoint.pt"), "--steps", "20"])
    saved = final(tmp_path)
    assert saved["config"]["amp"] == "auto" and saved["config"]["lr_schedule"] == "linear"
    lr = dcgan.MIXTURE_PRESET["g_lr"]
    got = dict((s, v) for _, s, v in read_scalars(folder, "charts/learning_rate"))
    assert [got[t + 1] for t in range(5, 20)] == pytest.approx([lr * (1 - t / 20) for t in range(5, 20)], rel=1e-6)


def test_ppo_plateau_cuts_the_lr_after_evaluations_that_do_not_improve(tmp_path):
    # an evaluation every iteration (256 steps), patience 0: every evaluation that is not a new best
    # (ReduceLROnPlateau's mode max, threshold 1e-4 relative) halves the lr for the iterations after it
    ppo.main(["--env", "CartPole-v1", "--total-timesteps", "2048", "--eval-interval", "256", "--eval-episodes", "2",
              "--lr-schedule", "plateau:patience=0,factor=0.5", "--logdir", str(tmp_path)])
    run = only_run(tmp_path)
    scores = [v for _, _, v in read_scalars(run, "eval/episodic_return")]
    lrs = [v for _, _, v in read_scalars(run, "charts/learning_rate")]
    assert len(scores) == 8 and len(lrs) == 8
    want, best, lr = [], -float("inf"), ppo.CLASSIC["learning_rate"]
    for score in scores[:-1]:  # the lr logged at iteration i + 1 follows the evaluations up to i
        want.append(lr)
        if score > best * (1 + 1e-4) if best > 0 else score > best:
            best = score
        else:
            lr *= 0.5
    want.append(lr)
    assert lrs == pytest.approx(want, rel=1e-6)
    assert min(lrs) < lrs[0]  # some evaluation did not improve: the test exercised a cut

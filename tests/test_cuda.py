"""What runs only on a GPU: the replay memory's pinned double-buffered copies, DCGAN's mixed precision,
a DQN run on CUDA that resumes on the CPU, and the optimizers' fused CUDA paths against their CPU
reference. Every test is marked `cuda` (`pytest -m cuda`) and skipped, saying so, without a GPU.

Project modules are imported inside the tests, so that this file is collected (and skipped) on a
CPU-only machine whatever state the rest of the tree is in.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none here)")


def gpu_delay():
    """Queue ~1 ms of GPU spinning on the current stream, so that copies queued after it are still
    pending when the host moves on: a pinned buffer refilled too early would then corrupt them."""
    if hasattr(torch.cuda, "_sleep"):
        torch.cuda._sleep(2_000_000)


# ---------------------------------------------------------------------------------------------
# (a) replay memory: pinned, double-buffered, non-blocking host -> GPU batches
# ---------------------------------------------------------------------------------------------

FRAME = (10, 12)
STACK = 4


def filled_memories(num_envs=2, capacity=160, steps=300, seed=0):
    """Two memories, on the CPU and on CUDA, given the same vector-env steps: random non-zero uint8
    frames (so the zero padding at episode starts is visible), terminations and truncations, and
    more steps than the rings hold, so they wrap."""
    from agents.replay import ReplayMemory

    mems = [ReplayMemory(capacity, num_envs, (STACK, *FRAME), np.uint8, frame_stack=STACK, action_dtype=np.uint8,
                         device=device) for device in ("cpu", "cuda")]
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        obs = rng.integers(1, 256, size=(num_envs, STACK, *FRAME), dtype=np.uint8)
        action = rng.integers(0, 4, size=num_envs).astype(np.uint8)
        reward = rng.normal(size=num_envs).astype(np.float32)
        terminated = rng.random(num_envs) < 0.06
        truncated = rng.random(num_envs) < 0.03
        for m in mems:
            m.add(obs, action, reward, terminated, terminated | truncated)
    return mems


@pytest.mark.cuda
@needs_cuda
def test_replay_cuda_batches_equal_cpu_batches():
    cpu, gpu = filled_memories()
    assert gpu.storage.size == gpu.storage.T and cpu.storage.size == cpu.storage.T  # the rings wrapped
    # the data hold what makes stacks hard: episode starts inside windows and autoreset slots
    stored = cpu.storage
    assert stored.first.sum() >= 5 and (~stored.valid).sum() >= 5 and stored.terminated.sum() >= 3

    batch_size, n = 64, 24
    rng_cpu, rng_gpu = np.random.default_rng(123), np.random.default_rng(123)
    cpu_batches, gpu_batches, pinned_ptrs = [], [], None
    for i in range(n):
        gpu_delay()  # the previous copies are still queued when the next batch fills a pinned set
        gpu_batches.append(gpu.sample(batch_size, rng_gpu))
        cpu_batches.append(cpu.sample(batch_size, rng_cpu))
        if i == 1:  # both pinned sets exist now; later batches must reuse them, not allocate new ones
            pinned_ptrs = [[t.data_ptr() for t in s.values()] for s in gpu._pinned]
    assert len(gpu._pinned) == 2
    assert [[t.data_ptr() for t in s.values()] for s in gpu._pinned] == pinned_ptrs
    for s in gpu._pinned:
        assert all(t.is_pinned() for t in s.values())

    # compared only now, after every batch was queued: a copy that read its pinned set after the set
    # was refilled for a later batch would show that later batch's data here
    torch.cuda.synchronize()
    zero_padded = 0
    for i, (c, g) in enumerate(zip(cpu_batches, gpu_batches)):
        assert set(g) == set(c) == {"obs", "actions", "rewards", "next_obs", "terminated", "discounts"}
        for k in c:
            assert g[k].device.type == "cuda", (i, k, g[k].device)
            assert g[k].dtype == c[k].dtype and g[k].shape == c[k].shape, (i, k)
            assert torch.equal(g[k].cpu(), c[k]), f"batch {i}: {k} differs from the CPU memory's"
        zero_padded += int((c["obs"].flatten(2).amax(2) == 0).any(1).sum())
    assert zero_padded > 0  # some sampled stacks begin an episode: their older frames are zeros
    assert c["obs"].shape == (batch_size, STACK, *FRAME)
    # both memories drew the same indices: their generators are in the same state afterwards
    assert rng_cpu.integers(1 << 62) == rng_gpu.integers(1 << 62)


# ---------------------------------------------------------------------------------------------
# (b) DCGAN mixed precision
# ---------------------------------------------------------------------------------------------


def small_dcgan(**overrides):
    from gans import dcgan

    cfg = dcgan.resolve(dcgan.Config(dataset="cifar10", g_width=8, d_width=8, batch_size=32, **overrides))
    return cfg, dcgan.build_models(cfg, torch.device("cuda"))


def train_a_few_steps(m, cfg, steps=6):
    from gans import dcgan

    device = torch.device("cuda")
    g = torch.Generator(device=device).manual_seed(0)
    real = (torch.rand(cfg.batch_size, 3, 32, 32, device=device, generator=g) * 2 - 1).contiguous(
        memory_format=torch.channels_last)
    before = {k: v.detach().clone() for k, v in m.G.named_parameters()}
    stats = torch.stack([dcgan.train_step(m, lambda: real, cfg.batch_size, cfg.z_dim, device) for _ in range(steps)])
    return stats.cpu(), before


def assert_float32_and_trained(m, before, stats):
    assert torch.isfinite(stats).all(), stats
    d_loss, g_loss, d_real, d_fake = stats.unbind(1)
    assert (d_loss > 0).all() and (g_loss > 0).all()
    assert ((0 < d_real) & (d_real < 1) & (0 < d_fake) & (d_fake < 1)).all()
    for net in (m.G, m.D):
        for name, p in net.named_parameters():
            assert p.dtype == torch.float32 and p.device.type == "cuda", name
            assert torch.isfinite(p).all(), name
        for name, b in net.named_buffers():
            assert b.dtype in (torch.float32, torch.int64), name
    for opt in (m.g_opt, m.d_opt):
        for state in opt.state.values():
            for k, v in state.items():
                if torch.is_tensor(v) and v.is_floating_point() and v.dim() > 0:
                    assert v.dtype == torch.float32 and torch.isfinite(v).all(), k
    changed = [k for k, v in m.G.named_parameters() if not torch.equal(v, before[k])]
    assert changed, "the generator's weights did not change"


@pytest.mark.cuda
@needs_cuda
def test_dcgan_amp_uses_the_gpus_half_precision_and_keeps_float32_weights():
    cfg, m = small_dcgan()
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert m.g_amp.dtype is m.d_amp.dtype is expected
    # loss scaling exactly when float16 is used
    assert m.g_amp.scaler.is_enabled() == m.d_amp.scaler.is_enabled() == (expected is torch.float16)
    # channels-last weights on CUDA for images
    convs = [mod for mod in [*m.G.modules(), *m.D.modules()]
             if isinstance(mod, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    # the autocast is real: the networks compute in half precision inside it
    with m.autocast():
        fake = m.G(torch.randn(4, cfg.z_dim, device="cuda"))
        logits = m.D(fake)
    assert fake.dtype is expected and logits.dtype is expected
    stats, before = train_a_few_steps(m, cfg)
    assert_float32_and_trained(m, before, stats)


@pytest.mark.cuda
@needs_cuda
def test_dcgan_float16_with_loss_scaling_trains():
    """--amp fp16, the fallback for GPUs without bfloat16: float16 autocast with GradScalers."""
    cfg, m = small_dcgan(amp="fp16")
    assert m.g_amp.dtype is m.d_amp.dtype is torch.float16
    with m.autocast():
        assert m.G(torch.randn(4, cfg.z_dim, device="cuda")).dtype is torch.float16
    stats, before = train_a_few_steps(m, cfg)
    assert_float32_and_trained(m, before, stats)
    for scaler in (m.g_amp.scaler, m.d_amp.scaler):
        assert np.isfinite(scaler.get_scale()) and scaler.get_scale() > 0


@pytest.mark.cuda
@needs_cuda
def test_dcgan_no_amp_is_float32():
    cfg, m = small_dcgan(amp="off")
    assert m.g_amp.dtype is None and not m.g_amp.scaler.is_enabled()
    with m.autocast():
        assert m.G(torch.randn(4, cfg.z_dim, device="cuda")).dtype is torch.float32
    stats, before = train_a_few_steps(m, cfg, steps=3)
    assert_float32_and_trained(m, before, stats)


# ---------------------------------------------------------------------------------------------
# (c) DQN end to end on CUDA, resumed on the CPU
# ---------------------------------------------------------------------------------------------

DQN_SMALL = ["--env", "Breakout", "--buffer-size", "1000", "--learning-starts", "500", "--batch-size", "32",
             "--checkpoint-interval", "1000", "--eval-interval", "0"]


@pytest.mark.cuda
@needs_cuda
def test_dqn_trains_on_cuda_and_resumes_on_cpu(tmp_path, capfd):
    from agents import dqn

    torch.cuda.reset_peak_memory_stats()
    dqn.main([*DQN_SMALL, "--device", "cuda", "--total-timesteps", "1500", "--logdir", str(tmp_path)])
    # it ran on the GPU: the Q-network, its target, the optimizer state and batches were allocated there
    assert torch.cuda.max_memory_allocated() > 4 * 1_686_180 * 4  # Nature CNN parameters, float32
    assert "steps/s after learning starts" in capfd.readouterr().err
    runs = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    run = runs[0]

    saved = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 1500
    for k, v in saved["q_net"].items():
        assert v.device.type == "cpu" and torch.isfinite(v).all(), k
    # a CPU network takes the CUDA run's weights and computes Q-values with them
    q = dqn.QNetwork((4, 84, 84), len(saved["q_net"]["head.bias"]), tuple(saved["config"]["hidden_sizes"] or ()))
    q.load_state_dict(saved["q_net"])
    assert torch.isfinite(q(torch.zeros(2, 4, 84, 84, dtype=torch.uint8))).all()

    # resumed with --device cpu: refills the memory for --learning-starts steps, then updates on the CPU
    dqn.main(["--resume", str(run / "checkpoint.pt"), "--device", "cpu", "--total-timesteps", "2500"])
    resumed = torch.load(run / "final.pt", map_location="cpu", weights_only=True)
    assert resumed["global_step"] == 2500
    assert not torch.equal(resumed["q_net"]["head.weight"], saved["q_net"]["head.weight"])
    first = next(iter(saved["optimizer"]["state"].values()))["step"]
    later = next(iter(resumed["optimizer"]["state"].values()))["step"]
    assert later > first


@pytest.mark.cuda
@needs_cuda
def test_rainbow_trains_on_cuda_and_resumes_on_cpu(tmp_path, capfd):
    from agents import rainbow

    rainbow.main([*DQN_SMALL, "--device", "cuda", "--total-timesteps", "1500", "--logdir", str(tmp_path)])
    assert "steps/s after learning starts" in capfd.readouterr().err
    run = next(p for p in tmp_path.iterdir() if p.is_dir())
    saved = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 1500
    for k, v in saved["net"].items():
        assert v.device.type == "cpu" and torch.isfinite(v).all(), k
    rainbow.main(["--resume", str(run / "checkpoint.pt"), "--device", "cpu", "--total-timesteps", "2500"])
    resumed = torch.load(run / "final.pt", map_location="cpu", weights_only=True)
    assert resumed["global_step"] == 2500
    key = "advantage.2.weight_mu"
    assert not torch.equal(resumed["net"][key], saved["net"][key])


@pytest.mark.cuda
@needs_cuda
def test_sac_kfac_trains_on_cuda_and_resumes_on_cpu(tmp_path):
    from agents import sac

    small = ["--env", "Pendulum-v1", "--learning-starts", "200", "--checkpoint-interval", "0", "--eval-interval", "0"]
    sac.main([*small, "--device", "cuda", "--total-timesteps", "600", "--save-replay", "--logdir", str(tmp_path)])
    run = next(p for p in tmp_path.iterdir() if p.is_dir())
    saved = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 600 and saved["kfac"]["critics"]["layers"]
    sac.main(["--resume", str(run / "checkpoint.pt"), "--device", "cpu", "--total-timesteps", "800"])
    resumed = torch.load(run / "final.pt", map_location="cpu", weights_only=True)
    assert resumed["global_step"] == 800
    assert not torch.equal(resumed["actor"]["mean.weight"], saved["actor"]["mean.weight"])


@pytest.mark.cuda
@needs_cuda
def test_ppo_rollouts_live_on_cuda_and_the_checkpoint_resumes_on_cpu(tmp_path):
    from agents import ppo

    args = ["--env", "Breakout", "--num-envs", "4", "--num-steps", "32", "--eval-interval", "0",
            "--checkpoint-interval", "0", "--logdir", str(tmp_path)]
    ppo.main([*args, "--device", "cuda", "--total-timesteps", "256"])
    run = next(p for p in tmp_path.iterdir() if p.is_dir())
    saved = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 256 and all(torch.isfinite(v).all() for v in saved["agent"].values())
    ppo.main(["--resume", str(run / "checkpoint.pt"), "--device", "cpu", "--total-timesteps", "384"])
    resumed = torch.load(run / "final.pt", map_location="cpu", weights_only=True)
    assert resumed["global_step"] == 384
    assert not torch.equal(resumed["agent"]["actor.weight"], saved["agent"]["actor.weight"])


# ---------------------------------------------------------------------------------------------
# (d) optimizers: fused CUDA paths against the CPU reference loop
# ---------------------------------------------------------------------------------------------

SHAPES = [(64, 32), (32,), (16, 8, 3, 3), (7,), (1,)]


def make_params(device):
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=g).to(device).requires_grad_() for s in SHAPES]
    with torch.no_grad():
        params[3].zero_()  # a zero tensor: LAMB's trust ratio falls back to 1 there
    return params


OPTIMIZERS = {
    "rmsproptf": ("RMSpropTF", [dict(lr=1e-2)]),
    "rmsproptf_momentum_wd": ("RMSpropTF", [dict(lr=1e-2, momentum=0.9, weight_decay=1e-2, centered=False)]),
    "lamb": ("LAMB", [dict(lr=1e-2)]),
    "lamb_clamp_and_adamw_group": ("LAMB", [dict(lr=1e-2, clamp=(0.0, 10.0)),
                                            dict(lr=1e-2, trust_ratio=False, weight_decay=0.0)]),
    "adabelief": ("AdaBelief", [dict(lr=1e-2)]),
    "adabelief_rectify_l2": ("AdaBelief", [dict(lr=1e-2, rectify=True, decoupled=False, weight_decay=1e-2)]),
}


def run_optimizer(name, device, foreach, steps=8):
    import optim

    cls_name, groups = OPTIMIZERS[name]
    params = make_params(device)
    if len(groups) == 1:
        opt = getattr(optim, cls_name)(params, foreach=foreach, **groups[0])
    else:  # first three tensors in the first group, the rest (vectors: biases, gains) in the second
        opt = getattr(optim, cls_name)([{"params": params[:3], **groups[0]}, {"params": params[3:], **groups[1]}],
                                       foreach=foreach)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g).to(device)
        opt.step()
    return params, opt


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_cuda_fused_path_matches_cpu_reference(name):
    from optim._util import use_foreach

    ref, ref_opt = run_optimizer(name, "cpu", foreach=False)
    gpu, gpu_opt = run_optimizer(name, "cuda", foreach=None)  # the default: fused lists on CUDA
    assert use_foreach(None, gpu) and all(group["foreach"] is None for group in gpu_opt.param_groups)
    for i, (r, c) in enumerate(zip(ref, gpu)):
        assert c.device.type == "cuda"
        torch.testing.assert_close(c.detach().cpu(), r.detach(), atol=1e-5, rtol=1e-5, msg=lambda m: f"param {i}: {m}")
    assert not torch.equal(gpu[0].detach().cpu(), make_params("cpu")[0].detach())  # they did move
    # the state matches too, and stays on the parameters' device (step counters on the CPU)
    for r, c in zip(ref, gpu):
        for k, v in ref_opt.state[r].items():
            w = gpu_opt.state[c][k]
            if v.dim() == 0:
                assert w.device.type == "cpu" and float(w) == float(v), k
            else:
                assert w.device.type == "cuda", k
                torch.testing.assert_close(w.cpu(), v, atol=1e-5, rtol=1e-5)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_cuda_step_does_not_sync_the_host(name):
    """DESIGN: no host-device syncs inside step(); CUDA's sync debug mode raises on one."""
    params, opt = run_optimizer(name, "cuda", foreach=None, steps=1)  # state created outside the check
    for p in params:
        p.grad = torch.randn_like(p)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            opt.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    assert all(torch.isfinite(p).all() for p in params)

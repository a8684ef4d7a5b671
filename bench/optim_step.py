"""Time per optimizer step of this package's optimizers relative to torch.optim.Adam(foreach=True), and
the amortized cost of K-FAC + Adam on a SAC-sized critic.

    python bench/optim_step.py [--device auto] [--rounds 15] [--steps 2] [--kfac-steps 20] [--threads 1]

1. Step only, on a ~10M-parameter stack of Linear layers with fixed random gradients: each optimizer
   (fused/foreach path where it has one) against Adam(foreach=True).
2. K-FAC: a whole training step (forward, MSE loss, backward, optimizer step) of SAC's critic
   Q(s, a): 23 -> 256 -> 256 -> 1 (HalfCheetah's 17 + 6 inputs), batch 256, timed over a multiple of
   10 steps so that decompositions are amortized. Adam alone against K-FAC + Adam in two settings:
   `kfac_adam_sac`, eigen mode with factors every step and eigendecompositions every 10 steps (the
   issue's setting), and `kfac_inv_f10_adam_sac`, inverse mode with factors and inverses every 10
   steps (the cheapest). K-FAC's statistics are gathered in the forward and backward passes, so a
   step-only time would hide most of its cost.

Rounds alternate between the contenders and each figure is the fastest round: on a shared machine,
other processes only ever add time, so the minimum is the least disturbed measurement. On CPU the
default is one thread: on a 2-core machine that others are using, a 2-thread elementwise op waits at
every OpenMP barrier for a descheduled sibling, and timings swing by 2x from run to run (--threads 0
keeps torch's default). Also on CPU, glibc is told to serve large blocks from its heap and keep freed
memory (`mallopt`): otherwise whether a 16 MB tensor is mmap'ed fresh (page faults on every step's
temporary) depends on what was freed before, and two identical Adam instances differed by 30%.

Last line: `ratio_vs_adam name=R ...`. Targets (issue 3): lamb, adabelief <= 1.3; kfac_adam_sac <= 2.
"""
from __future__ import annotations

import argparse
import ctypes
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import optim  # noqa: E402
from optim import KFAC  # noqa: E402


def steady_cpu_allocator():
    """Large allocations from glibc's heap, freed memory kept for reuse (see the module docstring)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 32 << 20) and libc.mallopt(m_trim_threshold, 1 << 30))


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def big_model(device) -> list[torch.Tensor]:
    """~10M parameters: 1024 -> 2048 -> 2048 -> 1024 -> 1024 -> 512 Linear layers."""
    widths = [1024, 2048, 2048, 1024, 1024, 512]
    layers = [nn.Linear(a, b) for a, b in zip(widths, widths[1:])]
    params = [p for layer in layers for p in layer.parameters()]
    params = [p.detach().to(device).requires_grad_() for p in params]
    g = torch.Generator(device=device).manual_seed(0)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g, device=device) * 1e-2
    return params


def bench_steps(device, rounds, steps):
    params = big_model(device)
    n = sum(p.numel() for p in params)
    # One set of parameters and gradients serves every optimizer (each has its own state); the values
    # drift a little as all of them step, which does not change the work per step.
    makers = {
        "adam": lambda: torch.optim.Adam(params, lr=1e-4, foreach=True),
        "rmsproptf": lambda: optim.RMSpropTF(params, lr=1e-4, foreach=True),
        "lamb": lambda: optim.LAMB(params, lr=1e-4, foreach=True),
        "adabelief": lambda: optim.AdaBelief(params, lr=1e-4, foreach=True),
        "lookahead": lambda: optim.Lookahead(torch.optim.Adam(params, lr=1e-4, foreach=True), k=5),
        "sharedadam": lambda: optim.SharedAdam(params, lr=1e-4, foreach=True),
    }
    opts = {name: make() for name, make in makers.items()}
    for opt in opts.values():          # first step creates the state: not timed
        opt.step()
    sync(device)
    ms = time_rounds({name: opt.step for name, opt in opts.items()}, rounds, steps, device)
    return n, ms, {name: ms[name] / ms["adam"] for name in ms}


def time_rounds(fns, rounds, steps, device):
    """ms per call of each function: the fastest of `rounds` rounds of `steps` calls, rounds interleaved."""
    best = {name: float("inf") for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            sync(device)
            best[name] = min(best[name], 1e3 * (time.perf_counter() - t0) / steps)
    return best


def sac_critic(device):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(23, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 1)).to(device)


def bench_kfac(device, rounds, steps):
    g = torch.Generator(device=device).manual_seed(1)
    x = torch.randn(256, 23, device=device, generator=g)
    y = torch.randn(256, 1, device=device, generator=g)

    def adam_step_fn():
        model = sac_critic(device)
        opt = torch.optim.Adam(model.parameters(), lr=3e-4, foreach=True)

        def step():
            opt.zero_grad()
            F.mse_loss(model(x), y).backward()
            opt.step()

        return step

    def kfac_step_fn(**kfac_kwargs):
        model = sac_critic(device)
        kfac = KFAC(model, damping=1e-2, **kfac_kwargs)
        opt = torch.optim.Adam(model.parameters(), lr=3e-4, foreach=True)

        def step():
            opt.zero_grad()
            with kfac.capture():
                F.mse_loss(model(x), y).backward()
            kfac.step()
            opt.step()

        return step

    fns = {"adam": adam_step_fn(),
           "kfac_adam_sac": kfac_step_fn(mode="eigen", factor_update_freq=1, inv_update_freq=10),
           "kfac_inv_f10_adam_sac": kfac_step_fn(mode="inverse", factor_update_freq=10, inv_update_freq=10)}
    for fn in fns.values():            # warm up: allocator, first factors and decompositions
        for _ in range(10):
            fn()
    ms = time_rounds(fns, rounds, steps, device)
    return ms, {name: ms[name] / ms["adam"] for name in ms if name != "adam"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda[:i]")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--steps", type=int, default=2, help="optimizer steps per timing, 10M model")
    ap.add_argument("--kfac-steps", type=int, default=20, help="training steps per timing (multiple of 10)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()
    if args.kfac_steps % 10:
        ap.error("--kfac-steps must be a multiple of 10 (the decomposition interval)")
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    steady = False
    if device.type == "cpu":
        if args.threads:
            torch.set_num_threads(args.threads)
        steady = steady_cpu_allocator()
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} rounds={args.rounds} "
          f"steady_allocator={steady}")

    n, ms, ratios = bench_steps(device, args.rounds, args.steps)
    print(f"step only, {n / 1e6:.2f}M parameters, foreach paths; fastest of {args.rounds} rounds")
    for name in ms:
        print(f"  {name:12s} {ms[name]:8.2f} ms/step  {ratios[name]:5.2f}x adam")

    kms, kratios = bench_kfac(device, args.rounds, args.kfac_steps)
    print(f"training step, SAC critic 23-256-256-1, batch 256; fastest of {args.rounds} rounds of {args.kfac_steps}")
    print(f"  {'adam':22s} {kms['adam']:8.2f} ms/step")
    for name, r in kratios.items():
        print(f"  {name:22s} {kms[name]:8.2f} ms/step  {r:5.2f}x adam")

    line = " ".join(f"{name}={r:.2f}" for name, r in {**ratios, **kratios}.items() if name != "adam")
    print(f"ratio_vs_adam {line}")


if __name__ == "__main__":
    main()

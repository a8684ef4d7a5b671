"""DCGAN training throughput: images/s of discriminator + generator steps at batch 128, 32x32.

Two loops over the same networks (Radford et al. widths, z 100) in the same process:
- trainer:   gans.dcgan.train_step as `python -m gans.dcgan` runs it: on CUDA bfloat16 autocast (float16
             with loss scaling where bfloat16 is missing) and channels-last; the discriminator's weights
             frozen during the generator step everywhere.
- reference: a plain float32 loop as in most DCGAN code: D(real), D(G(z).detach()), then D(G(z)) again
             for the generator with every gradient computed.

Real images are a fixed random batch already on the device, so data loading is not measured. The two
loops alternate in short rounds; each reports its median round, and the speed-up is the median of the
per-round ratios, so that load from other processes on a shared machine hits both loops alike. Runs on
the CPU, and on CUDA when there is a GPU. The last line is JSON.

    python bench/dcgan_throughput.py [--steps 2] [--rounds 15] [--devices cpu cuda] [--compile]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gans import dcgan  # noqa: E402

BATCH, Z, WIDTH = 128, 100, 64


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def trainer_loop(device: torch.device, compile_: bool = False):
    cfg = dcgan.resolve(dcgan.Config(dataset="cifar10", batch_size=BATCH, z_dim=Z, g_width=WIDTH, d_width=WIDTH,
                                     compile=compile_))
    m = dcgan.build_models(cfg, device)  # amp and channels_last on CUDA, as in training
    real = torch.rand(BATCH, 3, 32, 32, device=device).mul_(2).sub_(1)
    if device.type == "cuda":
        real = real.contiguous(memory_format=torch.channels_last)

    def step():
        dcgan.train_step(m, lambda: real, BATCH, Z, device)

    return step, m.g_amp.dtype


def reference_loop(device: torch.device):
    G, D = dcgan.Generator(Z, WIDTH, 32).to(device), dcgan.Discriminator(WIDTH, 32).to(device)
    g_opt = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    d_opt = torch.optim.RMSprop(D.parameters(), lr=2e-4, alpha=0.9)
    real = torch.rand(BATCH, 3, 32, 32, device=device).mul_(2).sub_(1)
    ones, zeros = torch.ones(BATCH, device=device), torch.zeros(BATCH, device=device)

    def step():
        fake = G(torch.randn(BATCH, Z, device=device))
        d_loss = F.binary_cross_entropy_with_logits(D(real), ones) + \
            F.binary_cross_entropy_with_logits(D(fake.detach()), zeros)
        d_opt.zero_grad()
        d_loss.backward()
        d_opt.step()
        g_loss = F.binary_cross_entropy_with_logits(D(fake), ones)
        g_opt.zero_grad()
        g_loss.backward()
        g_opt.step()

    return step


def images_per_sec(step, device: torch.device, steps: int) -> float:
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * BATCH / (time.perf_counter() - t)


def bench(device: torch.device, steps: int, rounds: int, warmup: int, compile_: bool = False) -> dict:
    torch.manual_seed(0)
    trainer, amp_dtype = trainer_loop(device)
    reference = reference_loop(device)
    compiled = trainer_loop(device, compile_=True)[0] if compile_ else None
    for _ in range(warmup):  # cuDNN autotuning, allocator, first-call overheads (and compilation)
        trainer()
        reference()
        if compiled:
            compiled()
    sync(device)
    t_runs, r_runs, c_runs = [], [], []
    for _ in range(rounds):
        t_runs.append(images_per_sec(trainer, device, steps))
        r_runs.append(images_per_sec(reference, device, steps))
        if compiled:
            c_runs.append(images_per_sec(compiled, device, steps))
    t, r = statistics.median(t_runs), statistics.median(r_runs)
    speedup = statistics.median(a / b for a, b in zip(t_runs, r_runs))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    precision = {None: "float32", torch.bfloat16: "bfloat16 autocast", torch.float16: "float16 autocast"}[amp_dtype]
    print(f"{device.type:5s} {name}: trainer ({precision}{', channels-last' if device.type == 'cuda' else ''}) "
          f"{t:8.1f} img/s   reference float32 {r:8.1f} img/s   speed-up x{speedup:.2f}   "
          f"(medians of {rounds} rounds of {steps} steps each; spread of the ratios "
          f"{min(a / b for a, b in zip(t_runs, r_runs)):.2f}-{max(a / b for a, b in zip(t_runs, r_runs)):.2f})",
          flush=True)
    out = {"device": name, "precision": precision, "trainer_img_s": round(t, 1), "reference_img_s": round(r, 1),
           "speedup": round(speedup, 3), "rounds": rounds, "steps_per_round": steps}
    if compiled:
        c, gain = statistics.median(c_runs), statistics.median(a / b for a, b in zip(c_runs, t_runs))
        print(f"{device.type:5s} trainer --compile {c:8.1f} img/s   x{gain:.2f} the eager trainer (compiled in "
              f"the warm-up)", flush=True)
        out.update(compiled_img_s=round(c, 1), compiled_over_trainer=round(gain, 3))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when available")
    p.add_argument("--steps", type=int, default=None, help="timed steps per round (default: cpu 2, cuda 50)")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per loop (default: cpu 2, cuda 30)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--compile", action="store_true", help="also time the trainer's step with --compile")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    results = {}
    for spec in devices:
        device = torch.device(spec)
        if device.type == "cuda" and not torch.cuda.is_available():
            print(f"{spec}: no CUDA device here, skipped", flush=True)
            continue
        cuda = device.type == "cuda"
        torch.backends.cudnn.benchmark = True
        results[device.type] = bench(device, args.steps or (50 if cuda else 2), args.rounds,
                                     args.warmup if args.warmup is not None else (30 if cuda else 2), args.compile)
    print(json.dumps({"bench": "dcgan_throughput", "batch": BATCH, "image_size": 32, "results": results}))


if __name__ == "__main__":
    main()

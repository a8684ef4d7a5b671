"""DCGAN at 64x64 on a folder of images: iterations/s and the whole command's time, our trainer beside PyTorch's
DCGAN example (pytorch/examples, dcgan/main.py), side by side in one run.

    python bench/dcgan_speed.py [--iterations 30] [--batch-size 64] [--rounds 2] [--device cpu] [--compile] [--bf16]

Both read the same folder of PNG images (written first, in ImageFolder's layout, random 64x64 RGB) with 2
loader workers (the example's default), at batch 64, for --iterations iterations of one discriminator and one
generator step:
- ours: the real trainer, `python -m gans.dcgan --dataset folder --image-size 64` (Adam for G, RMSprop for D,
  the discriminator's logits with a fused sigmoid-BCE, its weights frozen in the generator step, no host read
  per step), fidelity scores off, one sample grid and one checkpoint at the end; its figure is its own
  "steps/s after learning starts" line (from the end of its first step).
- pytorch: the example as it runs (bench/pytorch_dcgan.py: ImageFolder, Adam for both, Sigmoid + BCELoss,
  five host reads and a printed line per iteration, image grids every 100 iterations, a checkpoint per epoch),
  one epoch over exactly --iterations batches; its figure is iterations/s after its first iteration.
"whole" is the command's wall time, start-up and the first iteration included. Rounds alternate the
commands and each keeps its best. --compile adds ours with --compile (compiled in its first step, which
the figure leaves out; the whole command counts it). Last line:
`dcgan_its ours=X pytorch=Y ratio=R whole_ours=.. whole_pytorch=.. [compiled=Z]`.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from commands import ROOT, timed_command


def write_folder(root: Path, count: int, size: int = 64) -> None:
    """`count` random RGB PNGs in ImageFolder's layout (one class folder), as a user's dataset sits on disk."""
    from PIL import Image

    folder = root / "class0"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")


def ours(args, data: Path, extra: tuple[str, ...] = ()) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as logdir:
        return timed_command([sys.executable, "-m", "gans.dcgan", "--dataset", "folder", "--data-dir", str(data),
                              "--image-size", "64", "--batch-size", str(args.batch_size), "--steps",
                              str(args.iterations), "--workers", "2", "--fidelity-interval", "0",
                              "--checkpoint-interval", str(args.iterations), "--sample-interval", str(args.iterations),
                              "--log-interval", "10", "--device", args.device, "--logdir", logdir, *extra],
                             " ".join(["gans.dcgan", *extra]))[:2]


def pytorch(args, data: Path) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as outf:
        return timed_command([sys.executable, str(ROOT / "bench" / "pytorch_dcgan.py"), "--dataroot", str(data),
                              "--batch-size", str(args.batch_size), "--niter", "1", "--workers", "2",
                              "--outf", outf, "--manual-seed", "1", "--device", args.device],
                             "pytorch_dcgan.py")[:2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=30, help="iterations per command (D and G step each)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="also time ours with --compile")
    parser.add_argument("--bf16", action="store_true", help="also time ours with --amp bf16 (bfloat16 autocast)")
    args = parser.parse_args()
    if args.iterations < 2:
        parser.error("--iterations must be at least 2 (the first is left out of the figures)")

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "images"
        write_folder(data, args.iterations * args.batch_size)  # one epoch of the example = --iterations batches
        commands = {"ours": lambda: ours(args, data), "pytorch": lambda: pytorch(args, data)}
        if args.compile:
            commands["ours --compile"] = lambda: ours(args, data, ("--compile",))
        if args.bf16:
            commands["ours --amp bf16"] = lambda: ours(args, data, ("--amp", "bf16"))
        best = {name: (0.0, 0.0) for name in commands}
        for r in range(args.rounds):
            for name, run in commands.items():
                its, whole = run()
                if its > best[name][0]:
                    best[name] = (its, whole)
                print(f"round {r + 1}: {name} {its:.2f} iterations/s, whole command {whole:.1f} s", flush=True)
    for name, (its, whole) in best.items():
        print(f"{name:<15} {its:6.2f} it/s ({its * args.batch_size:6.1f} img/s)  whole {whole:6.1f} s  "
              f"(best of {args.rounds})")
    o, p = best["ours"], best["pytorch"]
    tail = f" compiled={best['ours --compile'][0]:.2f}" if args.compile else ""
    if args.bf16:
        tail += f" bf16={best['ours --amp bf16'][0]:.2f} bf16_ratio={best['ours --amp bf16'][0] / p[0]:.2f}"
    print(f"dcgan_its ours={o[0]:.2f} pytorch={p[0]:.2f} ratio={o[0] / p[0]:.2f} whole_ours={o[1]:.1f} "
          f"whole_pytorch={p[1]:.1f}{tail}")


if __name__ == "__main__":
    main()

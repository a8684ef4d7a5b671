"""Draw samples from a DCGAN checkpoint, without the training stack (no data set, optimizers or TensorBoard).

    python -m gans.sample runs/cifar10__dcgan__1__1700000000/final.pt --n 64 --out grid.png
    python -m gans.sample runs/ring8__dcgan__1__1700000000/final.pt --n 2500 --out ring.png

The checkpoint carries the run's config, from which the generator is rebuilt. `--out` decides the
format: .png/.jpg an image grid (a scatter plot for 2D mixtures, with their mode metrics printed),
.pt a tensor file, .npy a NumPy array, of the raw samples (images in [-1, 1]).
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import tyro

from common.checkpoint import load
from common.cli import parse
from common.errors import exits_cleanly, fail
from common.config import config_from_checkpoint
from gans.dcgan import MIXTURES, Config, build_generator, generate


@dataclass
class SampleConfig:
    """Draw samples from a DCGAN checkpoint."""

    checkpoint: tyro.conf.Positional[str]
    """checkpoint.pt or final.pt from a run folder"""
    n: int = 64
    """number of samples"""
    out: str = "samples.png"
    """output file: .png/.jpg (grid of images, or scatter plot for 2D mixtures), .pt or .npy (raw samples)"""
    seed: int = 0
    """seed of the noise"""
    nrow: int | None = None
    """images per row of the grid (default: the square root of --n, rounded up)"""
    device: str = "cpu"
    """cpu, cuda or cuda:N"""


def load_generator(path: str, device: torch.device):
    """The generator of checkpoint `path`, in eval mode, and the config it was trained with."""
    ckpt = load(path, "dcgan")
    cfg = config_from_checkpoint(Config, ckpt, path)
    G = build_generator(cfg)
    try:
        G.load_state_dict(ckpt["G"])
    except RuntimeError as e:
        fail(f"{path}: the generator's weights do not fit its config ({str(e).splitlines()[0][:160]})")
    return G.to(device).eval(), cfg


@dataclass
class Generator:
    """A DCGAN checkpoint's generator in Python (`gans.load(path)`): `sample(n)` draws n samples, images in
    [-1, 1] (n, channels, size, size) or 2D points (n, 2), on the CPU."""

    G: torch.nn.Module
    config: Config
    device: torch.device

    def sample(self, n: int, seed: int | None = None) -> torch.Tensor:
        if n < 1:
            raise ValueError(f"sample() draws at least 1 sample (got {n})")
        seed = int(torch.randint(0, 2**31 - 1, ())) if seed is None else seed
        return draw(self.G, self.config, n, seed, self.device).cpu()


def load_dcgan(path: str | Path, device: str = "auto") -> Generator:
    """The generator of a DCGAN checkpoint, on `device` (auto, cpu, cuda)."""
    from common.device import pick

    target = pick(device)
    G, cfg = load_generator(str(path), target)
    return Generator(G, cfg, target)


def draw(G, cfg, n: int, seed: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return generate(G, torch.randn(n, cfg.z_dim, generator=g).to(device))


@exits_cleanly
def main(args: list[str] | None = None) -> Path:
    sc = parse(SampleConfig, args, prog="python -m gans.sample", description=__doc__.split("\n\n")[0])
    if sc.n < 1:
        fail(f"--n must be at least 1, got {sc.n}")
    out = Path(sc.out)
    suffix = out.suffix.lower()
    if suffix not in (".png", ".jpg", ".jpeg", ".pt", ".npy"):
        fail(f"--out {sc.out}: use a .png, .jpg, .pt or .npy file name")
    from common.device import pick

    device = pick(sc.device)
    G, cfg = load_generator(sc.checkpoint, device)
    samples = draw(G, cfg, sc.n, sc.seed, device).cpu()
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".pt":
        torch.save(samples, out)
    elif suffix == ".npy":
        import numpy as np

        np.save(out, samples.numpy())
    elif cfg.dataset in MIXTURES:
        from PIL import Image

        from gans.data import mixture, scatter_image
        from gans.metrics import mixture_score

        mix = mixture(cfg.dataset)
        Image.fromarray(scatter_image(samples, mix).permute(1, 2, 0).numpy()).save(out)
        print(f"{cfg.dataset}: {mixture_score(samples, mix.means, mix.std)} in {sc.n} samples", file=sys.stderr)
    else:
        import torchvision

        nrow = sc.nrow or math.ceil(math.sqrt(sc.n))
        torchvision.utils.save_image(samples, out, nrow=nrow, normalize=True, value_range=(-1, 1))
    print(f"wrote {sc.n} samples to {out}", file=sys.stderr)
    return out


if __name__ == "__main__":
    main()

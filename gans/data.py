"""Training data for the GAN trainers: CIFAR-10, any folder of images, and 2D mixtures of Gaussians.

Every source hands the training loop ready batches on the training device: images as float
tensors in [-1, 1] of shape (N, 3, H, W) (the range of the generator's tanh), points as (N, 2).
Sources that shuffle with their own torch.Generator expose `state_dict`/`load_state_dict`, so a
resumed run draws the same batches as an uninterrupted one.

torchvision is imported only where it is needed, so that `gans.sample` can use the mixtures and
the scatter plot without pulling in the dataset code.
"""
from __future__ import annotations

import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common.errors import fail

# ---------------------------------------------------------------------------------------------
# 2D mixtures of Gaussians (the VEEGAN/PacGAN benchmark)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mixture:
    """Equal-weight isotropic Gaussians: `means` (K, 2), one `std` for all, `limit` for plots."""

    name: str
    means: torch.Tensor
    std: float
    limit: float

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        k = torch.randint(len(self.means), (n,), generator=generator)
        return self.means[k] + self.std * torch.randn(n, 2, generator=generator)


def mixture(name: str) -> Mixture:
    """`ring8`: 8 modes on a circle of radius 1, std 0.01; `grid25`: 5x5 modes at -4..4 step 2, std 0.05.

    The radii, spacings and standard deviations are PacGAN's (Lin et al. 2018), which its
    high-quality threshold of 3 standard deviations is calibrated for.
    """
    if name == "ring8":
        angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
        means = torch.stack([angles.cos(), angles.sin()], dim=1).float()
        return Mixture(name, means, 0.01, 1.5)
    if name == "grid25":
        axis = torch.arange(-4.0, 5.0, 2.0)
        means = torch.cartesian_prod(axis, axis)
        return Mixture(name, means, 0.05, 6.0)
    fail(f"unknown 2D mixture {name!r}: use ring8 or grid25")


MIXTURES = ("ring8", "grid25")


class MixtureSource:
    """Fresh samples from a mixture every batch (the data set is infinite)."""

    def __init__(self, name: str, batch_size: int, device: torch.device, seed: int):
        self.mixture = mixture(name)
        self.batch_size = batch_size
        self.device = device
        # sampled on the CPU with our own generator: the same stream on every device, and resumable
        self.generator = torch.Generator().manual_seed(seed)

    def next(self) -> torch.Tensor:
        return self.mixture.sample(self.batch_size, self.generator).to(self.device, non_blocking=True)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def scatter_image(points: torch.Tensor, mix: Mixture, size: int = 256) -> torch.Tensor:
    """A (3, size, size) uint8 picture of `points` (blue dots) over the mixture's means (red hollow squares,
    so that the samples on a mode stay visible).

    Drawn with tensor indexing rather than matplotlib, which the toolkit does not depend on.
    """
    img = torch.full((3, size, size), 255, dtype=torch.uint8)

    def to_pixels(xy: torch.Tensor) -> torch.Tensor:
        # x to the right, y upwards: row 0 is the top of the picture
        scaled = (xy.float().cpu() + mix.limit) / (2 * mix.limit) * (size - 1)
        cols, rows = scaled[:, 0].round().long(), (size - 1 - scaled[:, 1]).round().long()
        keep = (cols >= 0) & (cols < size) & (rows >= 0) & (rows < size)
        return torch.stack([rows[keep], cols[keep]], dim=1)

    def paint(pixels: torch.Tensor, radius: int, color: tuple[int, int, int], hollow: bool = False) -> None:
        for dr in range(-radius, radius + 1):
            for dc in range(-radius, radius + 1):
                if hollow and max(abs(dr), abs(dc)) < radius:
                    continue
                r = (pixels[:, 0] + dr).clamp(0, size - 1)
                c = (pixels[:, 1] + dc).clamp(0, size - 1)
                for ch, value in enumerate(color):
                    img[ch, r, c] = value

    paint(to_pixels(mix.means), 5, (220, 30, 30), hollow=True)
    paint(to_pixels(points.detach()), 0, (20, 60, 200))
    return img


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


def to_model_range(batch_uint8: torch.Tensor, image_size: int, channels_last: bool) -> torch.Tensor:
    """uint8 (N, 3, h, w) -> float in [-1, 1] at `image_size`, on the batch's device."""
    x = batch_uint8.float().div_(127.5).sub_(1.0)
    if x.shape[-1] != image_size or x.shape[-2] != image_size:
        # only CIFAR-10 at --image-size 64 gets here (folders are resized when read)
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False,
                          antialias=x.shape[-1] > image_size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


class TensorImageSource:
    """Shuffled epochs over a uint8 image tensor kept whole on the device.

    CIFAR-10's 50,000 images are 150 MB as uint8: on a GPU, indexing them there beats any
    DataLoader, and a batch costs one gather and one conversion.
    """

    def __init__(self, images: torch.Tensor, batch_size: int, device: torch.device, seed: int,
                 image_size: int, channels_last: bool = False):
        if len(images) == 0:
            fail("the data set is empty")
        self.images = images.to(device)
        self.batch_size = batch_size
        self.image_size = image_size
        self.channels_last = channels_last
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(len(images), generator=self.generator)
        self.position = 0

    def next(self) -> torch.Tensor:
        idx = []
        need = self.batch_size
        while need > 0:  # a batch may straddle two epochs, and tiny data sets may need several
            if self.position >= len(self.order):
                self.order = torch.randperm(len(self.images), generator=self.generator)
                self.position = 0
            take = self.order[self.position:self.position + need]
            self.position += len(take)
            need -= len(take)
            idx.append(take)
        idx = torch.cat(idx)
        if self.images.is_cuda:  # a pinned index copies asynchronously; a pageable one would sync
            idx = idx.pin_memory().to(self.images.device, non_blocking=True)
        batch = self.images[idx]
        return to_model_range(batch, self.image_size, self.channels_last)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "order": self.order, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.order = state["order"]
        self.position = int(state["position"])


# --- CIFAR-10 ----------------------------------------------------------------------------------

CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))


def read_cifar10_batch(path: Path) -> tuple[np.ndarray, list[int]]:
    """One of CIFAR-10's pickled batches: (N, 3, 32, 32) uint8 images and their labels.

    Our own reader instead of torchvision's CIFAR10 class, which refuses any file whose md5 is not
    the published one; structure is checked instead, so a damaged file is still a clear error.
    """
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")  # the batches were pickled by Python 2
        data = np.asarray(entry["data"], dtype=np.uint8)
        labels = [int(v) for v in entry["labels"]]
    except Exception as e:
        fail(f"cannot read CIFAR-10 batch {path}: {type(e).__name__}: {e}")
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        fail(f"CIFAR-10 batch {path} has data of shape {data.shape} and {len(labels)} labels; "
             f"expected N x 3072 and N labels")
    # rows are 1024 red, then 1024 green, then 1024 blue values, each plane row-major
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(data_dir: str | Path, download: bool = True) -> torch.Tensor:
    """CIFAR-10's 50,000 training images as one uint8 tensor (N, 3, 32, 32).

    Looks in `data_dir/cifar-10-batches-py`; when the files are not there and `download` is set,
    fetches the archive with torchvision (which checks the archive's md5) and unpacks it there.
    """
    root = Path(data_dir)
    folder = root / CIFAR_FOLDER
    missing = [name for name in CIFAR_TRAIN_FILES if not (folder / name).is_file()]
    if missing and download:
        from torchvision.datasets import CIFAR10
        from torchvision.datasets.utils import download_and_extract_archive

        try:
            download_and_extract_archive(CIFAR10.url, str(root), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5)
        except Exception as e:  # offline, proxy, disk full, bad archive
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            fail(f"CIFAR-10 is not in {folder} and downloading it failed ({reason[:160]}); "
                 f"put the extracted {CIFAR_FOLDER}/ folder (from {CIFAR10.url}) into {root.resolve()}")
        missing = [name for name in CIFAR_TRAIN_FILES if not (folder / name).is_file()]
    if missing:
        fail(f"CIFAR-10 not found: {folder.resolve()} lacks {', '.join(missing)}; put the extracted "
             f"{CIFAR_FOLDER}/ folder into {root.resolve()} (or leave out --no-download to fetch it)")
    arrays = [read_cifar10_batch(folder / name)[0] for name in CIFAR_TRAIN_FILES]
    return torch.from_numpy(np.concatenate(arrays))


# --- a folder of images --------------------------------------------------------------------------

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def find_images(folder: str | Path) -> list[Path]:
    root = Path(folder)
    if not root.is_dir():
        fail(f"--data-dir {folder}: no such folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        fail(f"no images under {root.resolve()} (looked for {' '.join(IMAGE_EXTENSIONS)}, in subfolders too)")
    return files


class ImageFiles(torch.utils.data.Dataset):
    """Every image under a folder, whatever its layout: RGB, shorter side resized, centre-cropped square.

    Returns uint8 (3, size, size); conversion to float happens on the training device.
    """

    def __init__(self, folder: str | Path, image_size: int):
        self.files = find_images(folder)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        from PIL import Image
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF

        path = self.files[i]
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
        except Exception as e:
            # a plain RuntimeError survives the trip out of a DataLoader worker; its message is
            # the last line of what the main process sees
            raise RuntimeError(f"cannot read image {path}: {type(e).__name__}: {e}") from None
        im = TF.resize(im, self.image_size, interpolation=InterpolationMode.BICUBIC, antialias=True)
        im = TF.center_crop(im, [self.image_size, self.image_size])
        return TF.pil_to_tensor(im)


class LoaderSource:
    """Endless shuffled batches from a Dataset of uint8 images, decoded by DataLoader workers.

    Its order is not part of a checkpoint: a resumed run starts a fresh shuffle.
    """

    def __init__(self, dataset: torch.utils.data.Dataset, batch_size: int, device: torch.device, seed: int,
                 image_size: int, workers: int, channels_last: bool = False):
        self.dataset = dataset
        self.device = device
        self.image_size = image_size
        self.channels_last = channels_last
        # no more workers than the cores this process may use (torch warns beyond that, and they only contend)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        workers = min(workers, cores)
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, shuffle=True,
            drop_last=len(dataset) >= batch_size,  # a folder smaller than a batch still trains
            num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(seed),
        )
        self._it = None

    def next(self) -> torch.Tensor:
        while True:
            if self._it is None:
                self._it = iter(self.loader)
            try:
                batch = next(self._it)
                break
            except StopIteration:
                self._it = None
            except Exception as e:
                lines = [line for line in str(e).strip().splitlines() if line.strip()]
                fail(lines[-1] if lines else f"reading images failed: {type(e).__name__}")
        return to_model_range(batch.to(self.device, non_blocking=True), self.image_size, self.channels_last)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def make_source(dataset: str, data_dir: str, batch_size: int, device: torch.device, seed: int,
                image_size: int = 32, download: bool = True, workers: int = 4, channels_last: bool = False):
    """The batch source for `--dataset`."""
    if dataset in MIXTURES:
        return MixtureSource(dataset, batch_size, device, seed)
    if dataset == "cifar10":
        return TensorImageSource(load_cifar10(data_dir, download), batch_size, device, seed, image_size,
                                 channels_last)
    if dataset == "folder":
        return LoaderSource(ImageFiles(data_dir, image_size), batch_size, device, seed, image_size, workers,
                            channels_last)
    fail(f"unknown dataset {dataset!r}: use cifar10, folder, ring8 or grid25")


def real_images_uint8(source, limit: int) -> torch.Tensor:
    """Up to `limit` real images as uint8 (N, 3, H, W) on the CPU, the reference set for FID/KID.

    A fixed random subset: the same for every evaluation of a run, and not biased by the order of
    files in a folder sorted by class.
    """
    n = len(source.images) if isinstance(source, TensorImageSource) else len(source.dataset)
    pick = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:limit].sort().values
    if isinstance(source, TensorImageSource):
        images = source.images[pick.to(source.images.device)].cpu()
        if images.shape[-1] != source.image_size:
            images = to_model_range(images, source.image_size, False).add(1).mul(127.5).round().clamp(0, 255)
            images = images.to(torch.uint8)
        return images
    if isinstance(source, LoaderSource):
        return torch.stack([source.dataset[int(i)] for i in pick])
    raise TypeError("only image sources have real images")

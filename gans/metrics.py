"""Sample-quality metrics.

- 2D mixtures: modes captured and percent of high-quality samples, the protocol of VEEGAN
  (Srivastava et al. 2017) and PacGAN (Lin et al. 2018). Pure functions of the samples.
- Images: FID, Inception Score and KID through torch-fidelity, an optional extra
  (`pip install rlgan[metrics]`), imported only when asked for. Any way it can fail (not installed,
  Inception weights not downloadable offline) is one `FidelityUnavailable` with a one-line reason,
  so that the trainer can say so once and go on training.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

# ---------------------------------------------------------------------------------------------
# 2D mixtures
# ---------------------------------------------------------------------------------------------

MIXTURE_SAMPLES = 2500  # PacGAN and VEEGAN score 2,500 generated points
HIGH_QUALITY_STDS = 3.0


@dataclass(frozen=True)
class MixtureScore:
    modes: int  # modes captured
    high_quality: float  # percent of samples within 3 std of their nearest mode
    per_mode: tuple[int, ...]  # high-quality samples nearest to each mode

    def __str__(self) -> str:
        return f"{self.modes} modes, {self.high_quality:.1f}% high quality"


def nearest_mode(samples: torch.Tensor, means: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of and Euclidean distance to the nearest mean, for every sample (N, 2)."""
    dist = torch.cdist(samples.double(), means.double().to(samples.device))
    d, k = dist.min(dim=1)
    return k, d


def mixture_score(samples: torch.Tensor, means: torch.Tensor, std: float,
                  threshold: float = HIGH_QUALITY_STDS) -> MixtureScore:
    """A sample is high quality when within `threshold` std of its nearest mode; a mode is captured
    when at least one high-quality sample is nearest to it. Non-finite samples count as low quality.
    """
    if samples.ndim != 2 or samples.shape[1] != means.shape[1]:
        raise ValueError(f"samples must be (N, {means.shape[1]}), got {tuple(samples.shape)}")
    if len(samples) == 0:
        raise ValueError("no samples to score")
    finite = torch.isfinite(samples).all(dim=1)
    k, d = nearest_mode(torch.where(finite[:, None], samples, torch.zeros_like(samples)), means)
    good = finite & (d <= threshold * std)
    per_mode = torch.bincount(k[good].cpu(), minlength=len(means))
    return MixtureScore(
        modes=int((per_mode > 0).sum()),
        high_quality=100.0 * float(good.double().mean()),
        per_mode=tuple(int(c) for c in per_mode),
    )


# ---------------------------------------------------------------------------------------------
# Images: FID / IS / KID via torch-fidelity
# ---------------------------------------------------------------------------------------------


class FidelityUnavailable(Exception):
    """torch-fidelity is missing or could not run (typically: Inception weights not downloadable)."""


class _Uint8Images(torch.utils.data.Dataset):
    """torch-fidelity reads datasets whose items are uint8 (3, H, W) tensors."""

    def __init__(self, images: torch.Tensor):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 (N, 3, H, W) images, got {images.dtype} {tuple(images.shape)}")
        self.images = images.cpu().contiguous()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def fidelity_missing() -> str | None:
    """Why FID/IS/KID cannot be computed here (torch-fidelity not installed), or None; imports nothing."""
    import importlib.util

    if importlib.util.find_spec("torch_fidelity") is None:
        return "torch-fidelity is not installed (pip install 'rlgan[metrics]')"
    return None


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] -> uint8 in [0, 255], as torch-fidelity and PNG files want them."""
    return images.detach().float().add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8)


def fidelity(fake: torch.Tensor, real: torch.Tensor, *, cuda: bool, weights_path: str | None = None,
             real_cache_name: str | None = None) -> dict[str, float]:
    """FID, IS and KID of uint8 `fake` images against uint8 `real` ones.

    Returns {"fid", "is", "is_std", "kid", "kid_std"}. Raises FidelityUnavailable with a one-line
    reason when torch-fidelity is not installed or cannot run. `real_cache_name` lets torch-fidelity
    cache the real images' Inception statistics between calls.
    """
    missing = fidelity_missing()
    if missing:
        raise FidelityUnavailable(missing)
    import torch_fidelity
    n = min(len(fake), len(real))
    kwargs = dict(
        input1=_Uint8Images(fake), input2=_Uint8Images(real), cuda=cuda, isc=True, fid=True, kid=True,
        # KID averages over subsets that must fit into both sets; 1,000 is the library's default
        kid_subset_size=min(1000, n), verbose=False,
    )
    if weights_path:
        kwargs["feature_extractor_weights_path"] = weights_path
    if real_cache_name:
        kwargs["input2_cache_name"] = real_cache_name
    try:
        result = torch_fidelity.calculate_metrics(**kwargs)
    except Exception as e:  # offline weight download, bad weights path, out of memory ...
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = "" if weights_path else " (offline? its Inception weights download at first use: pass a local copy " \
                                        "with --inception-weights)"
        raise FidelityUnavailable(f"torch-fidelity failed: {type(e).__name__}: {reason[:200]}{hint}") from None
    return {
        "fid": float(result["frechet_inception_distance"]),
        "is": float(result["inception_score_mean"]),
        "is_std": float(result["inception_score_std"]),
        "kid": float(result["kernel_inception_distance_mean"]),
        "kid_std": float(result["kernel_inception_distance_std"]),
    }

"""Device choice: `auto` takes CUDA when there is one."""
from __future__ import annotations

import torch

from common.errors import fail


def pick(spec: str = "auto") -> torch.device:
    """`auto`, `cpu`, `cuda` or `cuda:N`; an unavailable choice is a UserError."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        fail(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            fail(f"--device {spec}: CUDA is not available on this machine (use --device cpu or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            fail(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif device.type != "cpu":
        fail(f"unsupported device {spec!r}: use auto, cpu, cuda or cuda:N")
    return device

"""Mixed precision, `--amp auto|bf16|fp16|off`: autocast around a trainer's forward passes and, for
float16, a loss scaler whose state checkpoints carry.

bfloat16 has float32's exponent range, so its gradients need no scaling; float16's range is narrow
enough that small gradients underflow, so its losses are scaled up before backward and the gradients
unscaled before clipping and the step (torch.amp.GradScaler, which also skips a step whose gradients
overflowed and lowers the scale). The weights and the optimizers' state stay float32 throughout.
"""
from __future__ import annotations

import sys
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Literal

import torch

from common.errors import fail

AmpMode = Literal["auto", "bf16", "fp16", "off"]


@dataclass
class AmpConfig:
    """The --amp field of a trainer that has it (the DCGAN trainer and the CNN agents)."""

    amp: AmpMode = "off"
    """Mixed precision of the updates: bf16 (autocast), fp16 (autocast and loss scaling, its scale
    kept in checkpoints), off (float32), or auto (bf16 where the GPU has it, else fp16; float32 on
    the CPU). On the CPU fp16 is refused and bf16 is faster where the CPU has bfloat16 instructions
    (AVX512-BF16 or AMX; measured on a 2-core EPYC: the DCGAN trainer's 64x64 step 1.9x, PPO's Atari
    command 1.3x, DQN's update 1.5x but its whole step not measurably, within the machine's drift) and
    slower than float32 where it has none (said at start)."""


def cpu_has_bf16() -> bool | None:
    """Whether the CPU has bfloat16 instructions (x86's AVX512-BF16 or AMX-BF16, from /proc/cpuinfo);
    None where that cannot be read (not Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        return None
    return None


_said = {"slow bf16": False}


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype --amp `mode` means on `device`; None for float32."""
    if mode == "off":
        return None
    if device.type != "cuda":
        if mode == "fp16":
            fail("--amp fp16 needs a CUDA GPU (the CPU has no float16 matrix units, and its loss scaler is "
                 "not supported); use --amp bf16 or off")
        if mode == "bf16" and cpu_has_bf16() is False and not _said["slow bf16"]:
            _said["slow bf16"] = True  # once per process: the DCGAN trainer asks once per network
            print("note: --amp bf16 on a CPU without bfloat16 instructions (AVX512-BF16, AMX) runs slower than "
                  "float32", file=sys.stderr)
        return torch.bfloat16 if mode == "bf16" else None
    bf16 = torch.cuda.is_bf16_supported()
    if mode == "auto":
        return torch.bfloat16 if bf16 else torch.float16
    if mode == "bf16" and not bf16:
        fail("--amp bf16: this GPU has no bfloat16 (it came with Ampere); use --amp fp16")
    return torch.bfloat16 if mode == "bf16" else torch.float16


def check_amp(cfg) -> None:
    """Refuse, before anything is built, an --amp the chosen device cannot run (--eval plays in float32)."""
    from common.device import pick

    if cfg.eval:
        return
    amp_dtype(cfg.amp, pick(cfg.device))


class Precision:
    """Autocast at `dtype` (None: float32, where every method is what plain float32 training does)
    and the loss scaler that float16 needs, for one optimizer (a GAN holds one per network)."""

    def __init__(self, dtype: torch.dtype | None, device: torch.device):
        self.dtype, self.device_type = dtype, device.type
        self.scaler = torch.amp.GradScaler("cuda", enabled=dtype is torch.float16)

    @classmethod
    def of(cls, mode: str, device: torch.device) -> "Precision":
        return cls(amp_dtype(mode, device), device)

    def autocast(self):
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def unscale_(self, optimizer) -> None:
        """The true gradients, before they are clipped or measured (float16's are scaled until then)."""
        if self.scaler.is_enabled():
            self.scaler.unscale_(optimizer)

    def step(self, optimizer) -> None:
        """The optimizer's step (skipped by the scaler when float16 gradients overflowed)."""
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict:
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        # a run resumed at another precision starts its own scale (a disabled scaler saves nothing)
        if state and self.scaler.is_enabled():
            self.scaler.load_state_dict(state)

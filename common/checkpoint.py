"""Atomic checkpoints, safe loading, and saving on SIGINT/SIGTERM.

A checkpoint is a plain dict of tensors and python values, written to a temporary file in the same
folder and renamed over the old one, so a crash or a full disk never leaves a half-written file where
the last good checkpoint was. It is read with `torch.load(weights_only=True)`: no pickled code runs.
"""
from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path
from typing import Any

import torch

from common.errors import fail

FORMAT = "rlgan-checkpoint-v1"


def save(path: str | os.PathLike, payload: dict[str, Any], kind: str) -> Path:
    """Write `payload` atomically; `kind` (e.g. "dqn", "dcgan") is checked again by `load`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, "kind": kind, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the permissions open() would
        os.replace(tmp, path)
        _fsync_dir(path.parent)  # make the rename itself survive a crash
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. platforms that cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load(path: str | os.PathLike, kind: str | None, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save` for `kind` (None: any kind, which its "kind" key says); anything
    else is a UserError naming the file."""
    path = Path(path)
    try:
        found = path.is_file()
    except OSError as e:  # e.g. a name too long for the file system
        fail(f"checkpoint {path}: {e.strerror or e}")
    if not found:
        fail(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, random bytes, a pickle with code in it ...
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        fail(f"cannot read checkpoint {path}: corrupt or not a checkpoint ({reason[:200]})")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        fail(f"{path} is not a checkpoint written by this toolkit")
    if kind is not None and payload.get("kind") != kind:
        fail(f"{path} is a {payload.get('kind')!r} checkpoint, not {kind!r}")
    return payload


class StopSignal:
    """Context manager that turns SIGINT/SIGTERM into a flag the training loop polls between steps.

    The loop then saves a checkpoint and leaves cleanly. A second signal while stopping raises
    KeyboardInterrupt, so a stuck save can still be interrupted.
    """

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum, frame):
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum

    def __bool__(self) -> bool:
        return self.received is not None

    def __enter__(self) -> "StopSignal":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not in the main thread: leave signals alone
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

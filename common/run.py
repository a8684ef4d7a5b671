"""Run folder, TensorBoard writer and progress bar."""
from __future__ import annotations

import math
import re
import sys
import time
from collections import deque
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from common.cli import markdown_table


class Run:
    """A run folder holding the TensorBoard event files, `config.json` and checkpoints (made and
    named by common.lifecycle.open_run).

    A resumed run (`resume_step` = the checkpoint's step) reopens its folder, and TensorBoard
    continues the same curves: scalars are written against the global step the checkpoint restores.
    """

    def __init__(self, folder: str | Path, config, resume_step: int | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            _after_existing_event_files(self.folder)
        # A run that crashed logged past its last checkpoint; purge_step hides those events so the
        # resumed curve does not double back.
        self.writer = SummaryWriter(str(self.folder), purge_step=resume_step)
        if resume_step is None:
            self.writer.add_text("hyperparameters", markdown_table(config))

    def scalar(self, tag: str, value, step: int) -> None:
        self.writer.add_scalar(tag, float(value), step)

    def scalars(self, values: dict, step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, float(value), step)

    def hparams(self, config, metrics: dict[str, float], step: int) -> None:
        """TensorBoard's HPARAMS dashboard: the config's fields against `metrics`, in this run's own
        folder (run_name "."), so that runs of a grid or a sweep sort and filter there by any field."""
        from dataclasses import asdict

        skip = ("resume", "eval", "logdir")
        values = {k: v if isinstance(v, (bool, int, float, str)) else str(v)
                  for k, v in asdict(config).items() if k not in skip}
        if metrics:
            self.writer.add_hparams(values, metrics, run_name=".", global_step=step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


def _after_existing_event_files(folder: Path) -> None:
    """Wait until the clock is past the newest event file's second. TensorBoard reads a folder's
    event files in name order, and a name is `events.out.tfevents.<second>.<host>.<pid>.<counter>`:
    a file opened in the same second by the same process sorts by its counter as text (".10" before
    ".9"), and the resumed curve would then be read before the one it continues."""
    seconds = [int(m.group(1)) for f in folder.glob("events.out.tfevents.*")
               if (m := re.match(r"events\.out\.tfevents\.(\d+)\.", f.name))]
    now = time.time()
    if seconds and max(seconds) == int(now):  # a file from a clock ahead of ours is not waited for
        time.sleep(max(seconds) + 1 - now)


class Progress:
    """A tqdm bar over steps showing steps/s, the mean of recent episode returns (when there are
    episodes) and any other figures passed to `update`. Without a terminal it prints a line every
    30 s instead, so logs of batch jobs stay readable."""

    def __init__(self, total: int, initial: int = 0, window: int = 20, disable: bool | None = None):
        if disable is None:
            disable = not sys.stderr.isatty()
        self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, disable=disable)
        self.returns: deque[float] = deque(maxlen=window)
        self._last_print = time.time()
        self._quiet = disable
        self.total = total

    def episode(self, ret: float) -> None:
        self.returns.append(float(ret))

    @property
    def recent_return(self) -> float:
        return sum(self.returns) / len(self.returns) if self.returns else math.nan

    def update(self, step: int, sps: float, **figures: str) -> None:
        """Show `step`, `sps` and `figures` (already formatted, e.g. d_loss="0.693")."""
        shown = {"sps": f"{sps:.0f}"}
        if self.returns:
            shown["return"] = f"{self.recent_return:.1f}"
        shown.update(figures)
        self.bar.n = step
        self.bar.set_postfix(shown, refresh=False)
        self.bar.refresh()
        if self._quiet and time.time() - self._last_print > 30:
            self._last_print = time.time()
            print(f"step {step}/{self.total}  " + "  ".join(f"{k} {v}" for k, v in shown.items()), file=sys.stderr)

    def close(self) -> None:
        self.bar.close()

"""Progress of a long run on the terminal: a tqdm bar, or a line every 30 s in a log file."""
from __future__ import annotations

import math
import sys
import time
from collections import deque

from tqdm import tqdm


def _clock(seconds: float) -> str:
    """`1:02:03` (h:mm:ss), tqdm's remaining-time form."""
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


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
            eta = f"  eta {_clock((self.total - step) / sps)}" if sps > 0 and step < self.total else ""
            print(f"step {step}/{self.total}  " + "  ".join(f"{k} {v}" for k, v in shown.items()) + eta,
                  file=sys.stderr)

    def say(self, line: str) -> None:
        """A line on stderr that leaves the bar intact on a terminal."""
        if self._quiet:
            print(line, file=sys.stderr, flush=True)
        else:
            self.bar.write(line, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()

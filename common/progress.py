"""Progress of a long run on the terminal: a tqdm bar, or a line every 30 s in a log file."""
from __future__ import annotations

import math
import sys
import time
from collections import deque

from tqdm import tqdm


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

"""Running a whole command the way the speed benchmarks time it (bench/*_speed.py)."""
from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed_command(cmd: list[str], what: str) -> tuple[float, float, str]:
    """Run `cmd` from the repository root; its "steps/s after learning starts" (our trainers, on stderr) or
    "SPS after learning starts" (bench/cleanrl_*.py, on stdout) figure, its wall time, and its output.
    Exits with the command's last line if it fails or prints no figure."""
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    whole = time.perf_counter() - t0
    text = out.stdout + out.stderr
    found = re.search(r"(?:steps/s|SPS) after learning starts: ([0-9.]+)", text)
    if out.returncode != 0 or not found:
        sys.exit(f"{what} failed: {out.stderr.strip().splitlines()[-1:]}")
    return float(found.group(1)), whole, text

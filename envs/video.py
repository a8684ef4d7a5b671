"""Writing episodes to mp4 with OpenCV (already a dependency for Atari preprocessing), no moviepy."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


class VideoRecorder:
    """Collects frames (H, W) grayscale or (H, W, 3) RGB and writes an mp4 on `close()`.

    Small frames (the agent's 84x84 view) are scaled up by an integer factor so players can see them.
    """

    def __init__(self, path: str | Path, fps: int = 30, min_height: int = 336):
        self.path = Path(path)
        self.fps, self.min_height = fps, min_height
        self.frames: list[np.ndarray] = []

    def add(self, frame: np.ndarray) -> None:
        self.frames.append(np.asarray(frame, dtype=np.uint8).copy())

    def close(self) -> Path | None:
        if not self.frames:
            return None
        first = self.frames[0]
        scale = max(1, -(-self.min_height // first.shape[0]))
        height, width = first.shape[0] * scale, first.shape[1] * scale
        self.path.parent.mkdir(parents=True, exist_ok=True)
        writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (width, height))
        if not writer.isOpened():
            raise RuntimeError(f"OpenCV cannot write {self.path}")
        for frame in self.frames:
            if scale > 1:
                frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_NEAREST)
            frame = (cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2
                     else cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            writer.write(frame)
        writer.release()
        self.frames = []
        return self.path

"""What a run logs is what TensorBoard shows: a short DQN run, then the real `tensorboard` server on
127.0.0.1 serving it over HTTP, compared with every scalar the run logged (step, value and time)."""
import errno
import os
import socket
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter

from agents import dqn
from tensorboard_server import TensorBoardServer

# CartPole, mostly random steps: the point is what gets logged, not learning. 200 updates still run,
# so the losses/ tags are written too; --capture-video plays one evaluation episode at the end.
SHORT = ["--env", "CartPole-v1", "--total-timesteps", "1200", "--learning-starts", "1000", "--buffer-size", "2000",
         "--train-frequency", "1", "--gradient-steps", "1", "--batch-size", "16", "--log-interval", "100",
         "--checkpoint-interval", "0"]


@pytest.fixture
def logged(monkeypatch):
    """Every scalar written through a SummaryWriter during the test, as the writer was asked to write it.

    {(run folder name, tag): [(time before, time after, step, value), ...]} in call order. The writer
    itself still writes every event: this only watches the calls, so the event files are the real ones.
    """
    calls = defaultdict(list)
    add_scalar = SummaryWriter.add_scalar

    def watched(self, tag, scalar_value, global_step=None, walltime=None, *args, **kwargs):
        before = time.time()
        add_scalar(self, tag, scalar_value, global_step, walltime, *args, **kwargs)
        calls[(Path(self.log_dir).name, tag)].append((before, time.time(), global_step, float(scalar_value)))

    monkeypatch.setattr(SummaryWriter, "add_scalar", watched)
    return calls


def short_run(logdir: Path, *args: str) -> Path:
    """Train a short CartPole DQN into `logdir` and return its new run folder."""
    before = set(logdir.iterdir()) if logdir.exists() else set()
    dqn.main([*SHORT, "--logdir", str(logdir), *args])
    new = [p for p in logdir.iterdir() if p.is_dir() and p not in before]
    assert len(new) == 1, new
    return new[0]


def tags_of(logged, run: str) -> list[str]:
    return sorted(tag for name, tag in logged if name == run)


def wait_until(condition, timeout: float, what: str):
    """Poll `condition()` until it returns something truthy; the server loads event files in the background."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)
    return result


def assert_served_as_logged(tb: TensorBoardServer, logged, run: str) -> None:
    tags = tags_of(logged, run)
    wait_until(lambda: tb.scalar_tags().get(run) == tags, 60, f"{run}'s tags {tags}")
    for tag in tags:
        expected = logged[(run, tag)]
        # All of them, in full: the server loads a run's events incrementally, so wait for the last one.
        served = wait_until(lambda: (s := tb.scalars(run, tag)) and len(s) >= len(expected) and s, 60,
                            f"{len(expected)} points of {run}/{tag}")
        served = sorted(served, key=lambda e: (e[1], e[0]))
        assert [s for _, s, _ in served] == [s for _, _, s, _ in expected], tag
        # Event files store scalars as float32: what the dashboard gets is the logged value so rounded.
        np.testing.assert_array_equal(np.float32([v for _, _, _, v in expected]),
                                      np.float32([v for _, _, v in served]), err_msg=tag)
        for (wall, step, _), (before, after, _, _) in zip(served, expected):
            assert before <= wall <= after, f"{tag} at step {step}: wall time {wall} not in [{before}, {after}]"


def refuses_connections(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(5)
        return s.connect_ex(("127.0.0.1", port)) == errno.ECONNREFUSED


def test_tensorboard_serves_what_was_logged(tmp_path, logged):
    logdir = tmp_path / "runs"
    run = short_run(logdir, "--seed", "1", "--capture-video")
    assert {"charts/episodic_return", "charts/SPS", "losses/td_loss", "eval/video_episodic_return"} <= set(
        tags_of(logged, run.name))

    # --capture-video: the evaluation episode is an mp4 beside the run (not in TensorBoard), one frame
    # per step of the episode whose score is logged as eval/video_episodic_return (CartPole: +1 per step).
    videos = sorted((run / "videos").glob("*.mp4"))
    assert [v.name for v in videos] == ["step1200.mp4"]
    capture = cv2.VideoCapture(str(videos[0]))
    frames = 0
    while capture.read()[0]:
        frames += 1
    capture.release()
    eval_return = logged[(run.name, "eval/video_episodic_return")][-1][3]
    assert frames == eval_return > 0

    with TensorBoardServer(logdir) as tb:
        pid, port = tb.proc.pid, tb.port
        tb.wait_for_runs([run.name])
        assert tb.runs() == [run.name]
        assert_served_as_logged(tb, logged, run.name)

        # Training while TensorBoard is open: a run that starts now shows up after the server's reload.
        second = short_run(logdir, "--seed", "2", "--learning-starts", "2000")
        tb.wait_for_runs([second.name])
        assert_served_as_logged(tb, logged, second.name)
        assert sorted(tb.runs()) == sorted([run.name, second.name])

        code = tb.stop()
    assert code is not None  # it was stopped, not left running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert refuses_connections(port)


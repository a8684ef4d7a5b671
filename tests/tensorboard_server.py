"""A real `tensorboard` server for the tests: started on 127.0.0.1 at a free port, read over its HTTP
API, stopped by its PID. Test-only, so it lives here rather than in the package."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path


# The server is on the loopback interface: never send its requests through an http_proxy from the environment.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tensorboard_command() -> list[str]:
    """The `tensorboard` command installed beside this interpreter, as a user would run it."""
    script = shutil.which("tensorboard", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "tensorboard.main"]


class TensorBoardServer:
    """`tensorboard --logdir LOGDIR --host 127.0.0.1 --port PORT` in a child process, read over HTTP.

    Use it as a context manager: it starts the server on a free port of the loopback interface only,
    waits (bounded) until it answers, and stops it by its process id on exit, whatever happened. The
    server runs in its own process group so that stopping it also ends its data-server helper.
    """

    def __init__(self, logdir: str | Path, startup_timeout: float = 90.0, extra_args: tuple[str, ...] = ()):
        self.logdir = Path(logdir)
        self.startup_timeout = startup_timeout
        self.extra_args = tuple(extra_args)
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self._log = None  # the server's output, in a temporary file
        self.last_log = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "TensorBoardServer":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        # Another process may take the port between free_port() and the server's bind: try a few.
        for _ in range(3):
            self.port = free_port()
            self._log = tempfile.TemporaryFile()  # a file, not a pipe: a full pipe would block the server
            self.proc = subprocess.Popen(
                [*tensorboard_command(), "--logdir", str(self.logdir), "--host", "127.0.0.1",
                 "--port", str(self.port), *self.extra_args],
                stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            deadline = time.monotonic() + self.startup_timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    self.get("/data/runs", timeout=5)
                    return
                except (OSError, urllib.error.URLError):
                    time.sleep(0.25)
            if self.proc.poll() is None:
                self.stop()
                raise RuntimeError(f"tensorboard did not answer within {self.startup_timeout:.0f} s:\n{self.last_log}")
            code = self.stop()
            if "already in use" not in self.last_log:
                raise RuntimeError(f"tensorboard exited with code {code}:\n{self.last_log}")
        raise RuntimeError("tensorboard found no free port")

    def stop(self) -> int | None:
        """SIGTERM to the server's process group (its own PID), SIGKILL if it lingers; its exit code."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)
            except ProcessLookupError:  # it had just exited by itself
                proc.wait(timeout=15)
        self.last_log = self.log()
        if self._log is not None:
            self._log.close()
            self._log = None
        return None if proc is None else proc.returncode

    def log(self) -> str:
        """What the server printed (up to now, or before it was stopped)."""
        if self._log is None:
            return self.last_log
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def get(self, path: str, timeout: float = 10.0, **query):
        """GET `path` (with `query` as URL parameters) and decode the JSON answer."""
        url = self.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        with _NO_PROXY.open(url, timeout=timeout) as response:
            return json.loads(response.read())

    def runs(self) -> list[str]:
        return self.get("/data/runs")

    def scalar_tags(self) -> dict[str, list[str]]:
        """{run: [tag, ...]} for every run the server has loaded."""
        return {run: sorted(tags) for run, tags in self.get("/data/plugin/scalars/tags").items()}

    def scalars(self, run: str, tag: str) -> list[tuple[float, int, float]]:
        """(wall_time, step, value) as the scalars dashboard receives them."""
        return [(w, int(s), v) for w, s, v in self.get("/data/plugin/scalars/scalars", run=run, tag=tag)]

    def wait_for_runs(self, runs: list[str], timeout: float = 60.0) -> None:
        """Wait until every one of `runs` is listed (the server reloads its logdir every few seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            missing = set(runs) - set(self.runs())
            if not missing:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"tensorboard did not list {sorted(missing)} within {timeout:.0f} s")
            time.sleep(0.5)

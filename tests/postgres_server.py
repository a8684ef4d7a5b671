"""A throwaway PostgreSQL server for a test: Debian's postgresql package's initdb and pg_ctl on a
temporary folder, listening on a Unix socket only. As root (CI), the server runs as the package's
`postgres` user, since PostgreSQL refuses to run as root."""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path


def bindir() -> Path | None:
    """The folder of initdb and pg_ctl: on PATH, or Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(d) / "initdb").exists() and (Path(d) / "pg_ctl").exists():
            return Path(d)
    return None


def missing() -> str | None:
    """Why no server can be started here, or None."""
    if bindir() is None:
        return "PostgreSQL is not installed (Debian: apt-get install postgresql; .ci/run installs it)"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is not installed (pip install -e '.[test]')"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run the server as"
    return None


class Server:
    def __init__(self):
        self.bin = bindir()
        self.root = Path(tempfile.mkdtemp(prefix="rlgan-pg-"))
        self.data, self.socket = self.root / "data", self.root / "socket"
        self.socket.mkdir()
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            import pwd

            user = pwd.getpwnam("postgres")
            os.chmod(self.root, 0o755)
            for p in (self.root, self.socket):
                os.chown(p, user.pw_uid, user.pw_gid)

    def _run(self, *cmd: str) -> None:
        full = [str(self.bin / cmd[0]), *cmd[1:]]
        if self.as_postgres:
            full = ["runuser", "-u", "postgres", "--", *full]
        subprocess.run(full, check=True, capture_output=True, text=True, timeout=120)

    def start(self) -> str:
        """Start it; returns the SQLAlchemy URL of a fresh database."""
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres")
        options = f"-c listen_addresses='' -k {self.socket} -p 5432"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "server.log"), "-w", "start")
        self._run("createdb", "-h", str(self.socket), "-U", "postgres", "sweeps")
        return f"postgresql+psycopg2://postgres@/sweeps?host={self.socket}"

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(self.root, ignore_errors=True)

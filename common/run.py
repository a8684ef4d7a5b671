"""The run folder: made exclusively (or reopened on --resume, or made anew for a loose checkpoint),
locked while one process writes it, its config.json, its TensorBoard writer; and what an invocation
that fails leaves of it (nothing, if its run never started).

Run folders are `{logdir}/{env}__{algo}__{seed}__{unix_time}`, made exclusively, so two launches in
the same second with the same seed get two folders; a resumed run reopens its folder and rewrites
`config.json`, saying which fields changed. A loose checkpoint (no config.json or event files beside
it) resumes into a new run folder under --logdir instead. One process at a time writes a run folder:
it holds the folder's `.lock` (flock) while its Run is open; a second is refused with one line naming
the folder and the holder's pid."""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from common.cli import markdown_table
from common.checks import flag
from common.config import PER_INVOCATION
from common.errors import fail

LOCK_NAME = ".lock"


def lock_folder(folder: Path):
    """Hold `folder/.lock` exclusively (flock, non-blocking) for the process that writes the folder, and
    write its pid in it. Returns the open file: closing it, or the process's death (the kernel releases
    flocks), frees the folder; the file itself stays. A folder another open file holds (a second
    process resuming the same checkpoint, say) is refused with one line naming the folder and the
    holder's pid. None, nothing held, where there is no flock (Windows, a file system without locks)."""
    try:
        import fcntl
    except ImportError:
        return None
    handle = os.fdopen(os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666), "r+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            handle.close()  # e.g. ENOLCK: this file system has no locks to take
            return None
        holder = handle.read().strip()
        handle.close()
        who = f" (pid {holder})" if holder.isdigit() else ""
        fail(f"run folder {folder} is being written by another process{who}: one process at a time writes a run "
             f"folder; wait for it to end or stop it, then resume")
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


class Run:
    """A run folder holding the TensorBoard event files, `config.json` and checkpoints (made and
    named by common.lifecycle.open_run).

    A resumed run (`resume_step` = the checkpoint's step) reopens its folder, and TensorBoard
    continues the same curves: scalars are written against the global step the checkpoint restores.

    While open, a Run holds its folder's lock (`lock_folder`), taken before anything is written: a
    second writer is refused. `close()` releases it.

    `created`: this invocation made the folder (open_run). `started`: False until the training loop
    calls `mark_started()`; `lifecycle.main` removes a created folder whose Run never started when the
    invocation fails, so a failed start leaves nothing behind.
    """

    def __init__(self, folder: str | Path, config, resume_step: int | None = None, created: bool = False):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.created, self.started, self.closed = created, False, False
        self.tracker = None  # the W&B run with --track
        self._lock = lock_folder(self.folder)
        try:
            if resume_step is not None:
                _after_existing_event_files(self.folder)
            self.tracker = _wandb_run(self.folder, config) if getattr(config, "track", False) else None
            # A run that crashed logged past its last checkpoint; purge_step hides those events so the
            # resumed curve does not double back.
            self.writer = SummaryWriter(str(self.folder), purge_step=resume_step)
            if resume_step is None:
                self.writer.add_text("hyperparameters", markdown_table(config))
        except BaseException:
            if getattr(self, "writer", None) is not None:
                self.writer.close()  # its thread would write the folder again after it is removed
            if self.tracker is not None:
                self.tracker.finish()
            if self._lock is not None:
                self._lock.close()
            raise

    def mark_started(self) -> None:
        """The run has started training (its first step): from now on a failure keeps its folder."""
        self.started = True

    def scalar(self, tag: str, value, step: int) -> None:
        self.scalars({tag: value}, step)

    def scalars(self, values: dict, step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, float(value), step)
        if self.tracker is not None:  # the same tags against the same step (W&B's own x axis: global_step)
            self.tracker.log({**{tag: float(v) for tag, v in values.items()}, "global_step": step})

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
        """Flush and close the writer and release the folder's lock; a second call does nothing."""
        if self.closed:
            return
        self.closed = True
        try:
            self.writer.flush()
            self.writer.close()
            if self.tracker is not None:
                self.tracker.finish()
        finally:
            if self._lock is not None:
                self._lock.close()
                self._lock = None


def _wandb_run(folder: Path, config):
    """--track: a W&B run named and identified by the run folder (a resumed run continues it), its config
    the run's, its files under the run folder; steps are logged as `global_step`, the x axis of every
    chart."""
    from dataclasses import asdict

    try:
        import wandb
    except ImportError:
        fail("--track needs Weights & Biases: pip install -e '.[track]' (or leave --track off)")
    run_id = re.sub(r"[^A-Za-z0-9_-]", "-", folder.name)[-64:]
    try:
        run = wandb.init(project=config.wandb_project, entity=config.wandb_entity, name=folder.name, id=run_id,
                         resume="allow", config=asdict(config), dir=str(folder), reinit="create_new")
    except Exception as e:  # noqa: BLE001 (no login, no network: one line, the run not started)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        fail(f"--track: W&B did not start ({first[:200]}); log in with `wandb login`, or set WANDB_MODE=offline")
    run.define_metric("*", step_metric="global_step")
    return run


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


def new_run_folder(logdir: str | Path, env: str, algo: str, seed: int) -> Path:
    """Make `{logdir}/{env}__{algo}__{seed}__{unix_time}` exclusively; a taken name gets `_2`, `_3`, ..."""
    logdir = Path(logdir)
    base = f"{env.replace('/', '_')}__{algo}__{seed}__{int(time.time())}"
    try:
        logdir.mkdir(parents=True, exist_ok=True)
        for n in range(1, 10_000):
            folder = logdir / (base if n == 1 else f"{base}_{n}")
            try:
                folder.mkdir()
                return folder
            except FileExistsError:
                continue
    except OSError as e:
        fail(f"--logdir {logdir}: cannot make a run folder there ({e.strerror or e})")
    fail(f"cannot make a new run folder in {logdir}")

def is_run_folder(folder: Path) -> bool:
    """Whether `folder` is a run folder: a run's config.json or TensorBoard event files are in it."""
    try:
        return (folder / "config.json").is_file() or any(folder.glob("events.out.tfevents.*"))
    except OSError:
        return False

def resume_folder(cfg) -> Path | None:
    """The run folder that `--resume` goes on in: the checkpoint's own when that is a run folder; None
    for a loose checkpoint (copied out of its run, say), which resumes into a new run folder under
    --logdir (`open_run`), leaving the folder it lies in untouched."""
    folder = Path(cfg.resume).parent
    return folder if is_run_folder(folder) else None

def free(folder: Path) -> None:
    """Refuse, with one line naming it and the pid that holds it, a run folder another writer holds
    (`common.run.lock_folder`); takes nothing."""
    lock = lock_folder(folder)
    if lock is not None:
        lock.close()

def write_config(folder: Path, cfg) -> dict:
    """Write `config.json`; on resume, return the fields that changed from the one already there."""
    path = folder / "config.json"
    new = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    changed = {}
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = {}
        changed = {k: [old.get(k), v] for k, v in new.items() if k not in PER_INVOCATION and old.get(k) != v}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(new, indent=2))
    os.replace(tmp, path)
    return changed

def open_run(cfg, env: str, algo: str, resume_step: int | None, *, started: bool = True):
    """The run's folder and TensorBoard writer: a new folder, or the checkpoint's on resume
    (`resume_step`: the checkpoint's step). Returns (folder, Run).

    A resumed run keeps the scalars logged up to its checkpoint's step and purges later ones (a
    crashed run logged past its last checkpoint), so the curves continue without doubling back. A
    loose checkpoint (`resume_folder` None) resumes into a new folder under --logdir, said in one line.

    The Run holds the folder's lock (`common.run.lock_folder`) until it is closed or the process
    ends: a second process opening the folder is refused with one line naming it and the holder's pid.

    `started`: whether the run counts as started now. A folder made here whose Run has not started is
    removed by `invocation()` if the invocation fails (nothing half made is left behind); a resumed
    folder never is. Today's trainers leave it True (nothing changes for them); the session passes
    False and calls `run.mark_started()` at its first training step, so that any failure between here
    and there (building envs, restoring state, the first batch) takes the new folder away again.
    """
    folder = resume_folder(cfg) if resume_step is not None else None
    if folder is None:
        folder = new_run_folder(cfg.logdir, env, algo, cfg.seed)
        try:
            run = Run(folder, cfg, created=True)
            write_config(folder, cfg)
        except BaseException:
            if "run" in locals():
                run.close()
            shutil.rmtree(folder, ignore_errors=True)
            raise
        if resume_step is not None:
            print(f"{cfg.resume} is not in a run folder (no config.json or event files beside it): resuming it "
                  f"at step {resume_step} into a new run folder, {folder}", file=sys.stderr)
            run.writer.add_text("resumed", f"from {cfg.resume} at step {resume_step}", resume_step)
    else:
        run = Run(folder, cfg, resume_step=resume_step + 1)
        changed = write_config(folder, cfg)
        if changed:
            said = ", ".join(f"{flag(k)} {a} -> {b}" for k, (a, b) in changed.items())
            print(f"resuming with changed settings: {said}", file=sys.stderr)
            run.writer.add_text("resumed", f"at step {resume_step}: {said}", resume_step)
    if started:
        run.mark_started()
    if _invocations:
        _invocations[-1].append(run)
    return folder, run


# The Runs each invocation on the stack has opened (innermost last): those it made and that never
# started are removed if it fails.
_invocations: list[list[Run]] = []


@contextlib.contextmanager
def invocation():
    """Around one invocation of a trainer (`lifecycle.main`): on any failure (a UserError, another
    exception, Ctrl-C, a SystemExit), every Run it opened is closed (events flushed, its folder's lock
    released), and a run folder it made whose Run never started (`Run.started`) is removed, so a failed
    start leaves no half run behind. A resumed run's folder is never removed, nor one whose run started."""
    opened: list[Run] = []
    _invocations.append(opened)
    try:
        yield opened
    except BaseException:
        abandon(opened)
        raise
    finally:
        _invocations[:] = [x for x in _invocations if x is not opened]


def abandon(runs: list) -> None:
    """Close `runs` after a failure; remove the folders made for those that never started."""
    for run in runs:
        try:
            run.close()
        except OSError:  # a writer that cannot flush (disk full): the folder is dealt with below
            pass
        if run.created and not run.started:
            shutil.rmtree(run.folder, ignore_errors=True)

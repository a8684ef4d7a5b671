"""The session: what every trainer's loop needs around its algorithm, written once.

    state = RunState(q_net=q_net, optimizer=optimizer, ..., counters=c)
    session = Session(cfg, "dqn", env_id, state, saved, evaluate=play, weights=q_net.parameters)
    schedule = session.lr_schedule([optimizer], total_updates, ("learning_rate",))
    with session.open(c.global_step):
        while c.global_step < cfg.total_timesteps and not session.stop:
            ...                                           # act, store, learn
            session.episodes(info, c.global_step)
            session.tick(c.global_step, log=lambda: {...})  # log, divergence, evaluation, checkpoint
        return session.finish(c.global_step)

The session restores the run state from a checkpoint (`state.restore`), builds the learning-rate
schedule (restored, or advanced for a checkpoint of an earlier version), opens the run folder and its
TensorBoard writer, and then, at each `tick`, does what falls due: a log (steps/s, the trainer's
figures read back in one transfer, a stop with exit 3 when a loss is not finite), an evaluation
during training (logged, best.pt kept, a plateau schedule told, observers told) and a periodic
checkpoint (refused for non-finite weights). SIGINT/SIGTERM set `session.stop`; `finish` evaluates
the final weights, saves checkpoint.pt and final.pt, logs HPARAMS, records a video, closes the run
and, after a signal, exits with 128 + its number. Intervals are in the trainer's budget units (env
steps, or generator steps) and fall at their multiples from step 0, also after a resume, so that
every run of a grid is evaluated at the same steps.

Depends on torch, numpy, common (checkpoint, run, optimizers) and optim through common.optimizers.
"""
from __future__ import annotations

import dataclasses
import math
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, NoReturn

import numpy as np
import torch

from common import checkpoint
from common.errors import fail
from common.milestones import Milestones, next_multiple  # noqa: F401 (next_multiple: re-exported)
from common.observers import evaluated, observe_evaluations, observed  # noqa: F401
from common.state import Adapter, RunState

# ------------------------------------------------------------------------------------------------
# Ends of a run
# ------------------------------------------------------------------------------------------------


def finite(params: Iterable[torch.Tensor]) -> bool:
    params = [p.detach() for p in params]
    if not params:
        return True
    # one host read for all of them
    return bool(torch.stack([torch.isfinite(p).all() for p in params]).all())


def stopped(signum: int, step: int, path: Path) -> NoReturn:
    """After the loop saved on SIGINT/SIGTERM: one line, and the exit status of a killed process, so
    job schedulers know the run did not finish."""
    name = signal.Signals(signum).name
    print(f"stopped by {name} at step {step}; checkpoint saved: {path} (continue with --resume {path})",
          file=sys.stderr)
    sys.exit(128 + signum)


def duration(seconds: float) -> str:
    """`2 h 05 min`, `14 min`, `40 s`: a run's time to go, as a person reads it."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    return f"{int(seconds // 60)} min" if seconds >= 60 else f"{seconds:.0f} s"


def score_line(env: str, scores: list[float]) -> str:
    """`ENV: N episodes, score MEAN +/- STD (min, max)`: what every agent's --eval prints."""
    return (f"{env}: {len(scores)} episodes, score {np.mean(scores):.2f} +/- {np.std(scores):.2f} "
            f"(min {np.min(scores):.1f}, max {np.max(scores):.1f})")


class _Best:
    """The best evaluation so far (checkpoint key `best_eval`), which best.pt holds."""

    flat = True

    def __init__(self):
        self.best = -math.inf

    def state_dict(self) -> dict:
        return {"best_eval": self.best}

    def load_state_dict(self, saved: dict) -> None:
        self.best = float(saved.get("best_eval", -math.inf))


Play = Callable[[int, "Path | None", Any], list]
"""`play(episodes, video_path, stop)`: scores of `episodes` episodes with exploration off."""


class Session:
    """A trainer's run around its loop (see the module's docstring).

    `evaluate(episodes, video, stop)` plays with exploration off and returns the scores (None: the
    trainer has no such evaluation, as the DCGAN trainer, whose samples it schedules itself with
    `due`); `weights()` yields the parameters that must stay finite to be saved. `intervals` are
    the recurring events by name: log, eval and checkpoint, plus any of the trainer's own."""

    def __init__(self, cfg, algo: str, env_id: str, state: RunState, saved: dict | None, *,
                 evaluate: Play | None, weights: Callable[[], Iterable[torch.Tensor]], kind: str | None = None,
                 budget: str = "total_timesteps", intervals: dict[str, int | None] | None = None,
                 announce: str = "", resume_note: str = "", best: bool = True, may_be_nan: tuple[str, ...] = ()):
        self.cfg, self.algo, self.env_id, self.state, self.saved = cfg, algo, env_id, state, saved
        self.kind = kind or algo
        self.evaluate, self.weights = evaluate, weights
        self.budget = getattr(cfg, budget)
        self.intervals = intervals if intervals is not None else dict(
            log=cfg.log_interval, eval=cfg.eval_interval, checkpoint=cfg.checkpoint_interval)
        self._best = _Best()
        if best:  # best=False: a run that keeps no best.pt (the DCGAN trainer) has no best_eval key
            state.add("best_eval", self._best)
        state.add("config", Adapter(lambda: dataclasses.asdict(cfg), lambda saved_config: None))
        if saved is not None:
            state.restore(saved, cfg.resume)
        self.schedule = None
        self.folder: Path | None = None
        self.run = self.progress = self.milestones = None
        self.stop = checkpoint.StopSignal()
        self.last_eval: tuple[int, float] | None = None  # (step, mean) of the latest evaluation
        self._announce, self._resume_note = announce, resume_note
        self.may_be_nan = may_be_nan  # logged figures that are nan without a divergence (PPO's explained variance)
        self._estimated = False  # whether the run's remaining duration has been said

    # -- before the loop ----------------------------------------------------------------------------

    def lr_schedule(self, optimizers: list, total_updates: int, lr_fields: tuple[str, ...], done: int = 0):
        """The run's learning-rate schedule over `optimizers` (common.optimizers.lr_schedule), restored
        from the checkpoint, and part of the run state from here on."""
        from common import optimizers as wiring

        self.schedule = wiring.lr_schedule(self.cfg, optimizers, total_updates, self.saved, lr_fields, done)
        self.state.add("lr_schedule", self.schedule)
        return self.schedule

    def open(self, step: int) -> "Session":
        """The run folder (new, or the checkpoint's on --resume), its writer and progress bar; then
        `with session:` is the part of the run that SIGINT/SIGTERM stop cleanly."""
        from common.progress import Progress
        from common.run import open_run

        if self.saved is None and self._announce:
            print(self._announce, file=sys.stderr)
        # not started until the first tick: a failure before it takes a new folder away again
        self.folder, self.run = open_run(self.cfg, self.env_id, self.algo,
                                         step if self.saved is not None else None, started=False)
        observed(self.run)
        if self.saved is not None:
            note = f"; {self._resume_note}" if self._resume_note else ""
            print(f"resuming {self.folder} at step {step}{note}", file=sys.stderr)
        print(self.plan(step), file=sys.stderr)
        self.progress = Progress(self.budget, initial=step)
        self.milestones = Milestones(step, **self.intervals)
        return self

    def plan(self, step: int) -> str:
        """The start block's line: where the run writes, on what, how far, and what falls due on the way
        (its duration is said once the speed is known: common.progress)."""
        from common.device import pick

        due = [f"{name} every {every:,}" for name, every in self.intervals.items() if every and name != "log"]
        return (f"run folder: {self.folder}\n{self.algo} on {pick(self.cfg.device)}: step {step:,} of "
                f"{self.budget:,}" + (f" ({', '.join(due)})" if due else ""))

    def __enter__(self) -> "Session":
        self.stop.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.__exit__(*exc)

    # -- in the loop --------------------------------------------------------------------------------

    def save(self, name: str) -> Path:
        """checkpoint.pt holds the whole run state; final.pt and best.pt leave out what only resuming
        needs (RunState's resume_only parts: a saved replay memory)."""
        state = self.state.state_dict(resume=name == "checkpoint.pt")
        return checkpoint.save(self.folder / name, state, kind=self.kind)

    def episodes(self, info: dict, step: int) -> None:
        """Log the training episodes that ended at this step (raw returns and lengths)."""
        if "_episode" not in info:
            return
        for i in np.flatnonzero(info["_episode"]):
            self.episode(float(info["episode"]["r"][i]), int(info["episode"]["l"][i]), step)

    def episode(self, ret: float, length: int, step: int) -> None:
        self.run.scalars({"charts/episodic_return": ret, "charts/episodic_length": length}, step)
        self.progress.episode(ret)

    def updates_began(self, step: int) -> None:
        self.milestones.updates_began(step)

    def due(self, name: str, step: int) -> bool:
        if not self.run.started:  # the loop is running: a failure from here on keeps the folder
            self.run.mark_started()
        return self.milestones.due(name, step)

    def paused(self):
        return self.milestones.paused()

    def tick(self, step: int, log: Callable[[], dict[str, Any]] | None = None, **shown: str) -> None:
        """What falls due at `step`: a log of `log()`'s figures (tensors read back in one transfer;
        a non-finite `losses/` figure stops the run with exit 3), an evaluation, a checkpoint."""
        if self.due("log", step):  # (the first tick marks the run started)
            self.log(step, log() if log is not None else {}, **shown)
        if self.evaluate is not None and self.due("eval", step):
            scores = self.play(step)
            if not self.stop:  # a signal cut it short: no score to record
                self.record(scores, step)
        if self.due("checkpoint", step):
            with self.paused():
                self.checkpoint(step)

    def log(self, step: int, figures: dict[str, Any], **shown: str) -> dict[str, float]:
        sps = self.milestones.steps_per_second(step)
        values = read_back(figures)
        bad = {k: v for k, v in values.items()
               if k.startswith("losses/") and k not in self.may_be_nan and not math.isfinite(v)}
        if bad:
            name, value = next(iter(bad.items()))
            self.diverged(f"{name.split('/', 1)[1]}={value}", step)
        self.run.scalars({"charts/SPS": sps, **values}, step)
        self.progress.update(step, sps, **shown)
        self.say_time_left(step)
        return values

    def say_time_left(self, step: int) -> None:
        """Once, at the first log after updates began: how long the rest of the run will take, at the
        steps/s since then. (The log window's steps/s would count a replay warm-up's fast steps: Rainbow's
        atari100k preset said 23 min for a run of 62.)"""
        rate = self.milestones.training_sps(step) if not self._estimated else None
        if rate:
            self._estimated = True
            self.progress.say(f"at {rate:,.0f} steps/s, the {self.budget - step:,} steps left take about "
                              f"{duration((self.budget - step) / rate)}; run folder: {self.folder}")

    def play(self, step: int) -> list[float]:
        """An evaluation of the weights at `step` (its start said: a long one would otherwise sit silent),
        outside the steps/s count."""
        self.progress.say(f"evaluating at step {step}: {self.cfg.eval_episodes} episodes")
        with self.paused():
            return self.evaluate(self.cfg.eval_episodes, None, self.stop)

    def record(self, scores: list[float], step: int) -> bool:
        """An evaluation's scores: logged, best.pt kept (SB3's EvalCallback), a plateau schedule and
        the observers told. Returns whether it is a new best."""
        mean, std = float(np.mean(scores)), float(np.std(scores))
        self.last_eval = (step, mean)
        cut = getattr(scores, "cut", 0)
        self.run.scalars({"eval/episodic_return": mean, "eval/episodic_return_std": std,
                          "eval/episodes_cut": cut}, step)  # how many its step budget ended, scored as they stood
        said = f" ({cut} cut short by the evaluation budget, scored as they stood)" if cut else ""
        self.progress.say(f"evaluation at step {step}: {len(scores)} episodes, score {mean:.2f} +/- {std:.2f}{said}")
        if self.schedule is not None and hasattr(self.schedule, "evaluated"):
            self.schedule.evaluated(mean)
        improved = mean > self._best.best
        if improved:
            self._best.best = mean
            self.save("best.pt")
        evaluated(step, mean)
        return improved

    def checkpoint(self, step: int) -> Path:
        if not finite(self.weights()):
            self.diverged("non-finite weights", step)
        return self.save("checkpoint.pt")

    def diverged(self, what: str, step: int, hint: str = "") -> NoReturn:
        """Training produced non-finite numbers: one line naming the step and what is kept, exit 3."""
        self.close()
        path = self.folder / "checkpoint.pt"
        kept = (f"the last good checkpoint {path} is kept" if path.exists()
                else f"no checkpoint had been written yet (run folder: {self.folder})")
        fail(f"training diverged at step {step} ({what}); {kept}{hint}", code=3)

    # -- after the loop -----------------------------------------------------------------------------

    def finish(self, step: int, metrics: dict[str, float] | None = None) -> Path:
        """The end of the run, inside `with session:`: evaluate the final weights (unless evaluation is
        off or the last one was at this step), refuse to save non-finite weights, save checkpoint.pt and
        final.pt, print steps/s since the first update, log the config and final scores to HPARAMS,
        play one episode into videos/ with --capture-video, close the run and return final.pt. A signal
        before final.pt is written, or during the video, ends it with `stopped()`."""
        if not finite(self.weights()):
            self.diverged("non-finite weights", step)
        if (self.evaluate is not None and not self.stop and getattr(self.cfg, "eval_interval", 0)
                and (self.last_eval is None or self.last_eval[0] != step)):
            scores = self.play(step)
            if not self.stop:
                self.record(scores, step)
        self.progress.close()
        path = self.save("checkpoint.pt")
        if not self.stop:
            path = self.save("final.pt")
            sps = self.milestones.training_sps(step)
            if sps is not None:
                print(f"steps/s after learning starts: {sps:.1f}", file=sys.stderr)
            self.run.hparams(self.cfg, {**self.hparams_metrics(), **(metrics or {})}, step)
        if getattr(self.cfg, "capture_video", False) and not self.stop and self.evaluate is not None:
            scores = self.evaluate(1, self.folder / "videos" / f"step{step}.mp4", self.stop)
            if scores and not self.stop:
                self.run.scalar("eval/video_episodic_return", scores[0], step)
        self.close()
        if self.stop:
            stopped(self.stop.received, step, path)
        print(f"run folder: {self.folder}", file=sys.stderr)
        return path

    def hparams_metrics(self) -> dict[str, float]:
        """The HPARAMS dashboard's metrics: the final evaluation, and the recent training episodes' mean."""
        metrics = {}
        if self.last_eval is not None:
            metrics["hparams/final_eval_return"] = self.last_eval[1]
        if self.progress.returns:
            metrics["hparams/train_return"] = self.progress.recent_return
        return metrics

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()
        if self.run is not None:
            self.run.close()


def read_back(figures: dict[str, Any]) -> dict[str, float]:
    """Figures as floats, the tensors among them read from the device in one transfer."""
    tensors = {k: v for k, v in figures.items() if isinstance(v, torch.Tensor)}
    out = {k: float(v) for k, v in figures.items() if k not in tensors and v is not None}
    if tensors:
        values = torch.stack([v.detach().float().reshape(()) for v in tensors.values()]).tolist()
        out.update(zip(tensors, values))
    return {k: out[k] for k in figures if k in out}

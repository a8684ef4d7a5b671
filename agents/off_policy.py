"""What the replay-based agents (DQN, Rainbow, SAC) share around their loops: the replay memory in
checkpoints or its refill after a resume, the rounds of updates an env step pays for, the env stepped beside
them, and the target network's copy period."""
from __future__ import annotations

import sys

import envs
from common.state import RunState


def add_replay(state: RunState, memory, cfg, saved: dict | None) -> bool:
    """The replay memory in the run state: in checkpoint.pt with --save-replay, and restored whenever the
    checkpoint holds one (even when this run no longer saves it), so that learning goes on as it would
    have. Restored here and dropped from `saved`, which the run keeps: one copy in memory, not two.
    Returns whether it was restored."""
    restored = saved is not None and "replay" in saved
    if restored:
        RunState(replay=memory).restore(saved, cfg.resume)
        del saved["replay"]
    if cfg.save_replay:
        state.add("replay", memory, optional=True, resume_only=True)
    return restored


REFILLING = "refilling the replay memory"  # in a resumed run's start line (studies.grid looks for it)


def refill_note(cfg, saved: dict | None, replay_restored: bool) -> str:
    """What a resumed run says of its replay memory: refilled for `learning_starts` steps of the
    restored policy before updates resume (the memory is not in checkpoints unless saved with it);
    nothing for a run resumed at its budget, which only finishes."""
    if saved is not None and saved.get("global_step", 0) >= cfg.total_timesteps:
        return ""
    if replay_restored:
        return "with its replay memory"
    return f"{REFILLING} for {cfg.learning_starts} steps"


def learning_starts(cfg, step: int, resumed: bool, replay_restored: bool = False, origin: int | None = None) -> int:
    """The step after which updates run: `learning_starts`, or after a resume that many steps of
    refill from where the checkpoint stood (with the replay memory restored, none: the first run's
    learning start, `origin`, still holds if the checkpoint came before it). A budget that ends before
    then is said at start: the run would play without learning."""
    if not resumed:
        start = cfg.learning_starts
    elif replay_restored:
        start = max(step, cfg.learning_starts if origin is None else origin)
    else:
        start = step + cfg.learning_starts
    if start >= cfg.total_timesteps > step:
        print(f"note: --total-timesteps {cfg.total_timesteps:,} ends before learning starts at step {start:,} "
              f"(--learning-starts {cfg.learning_starts:,}): this run plays without a single update",
              file=sys.stderr)
    return start


def rounds_due(counters, cfg) -> int:
    """Rounds of `gradient_steps` updates due after an env step of `num_envs` transitions: one per
    `train_frequency` transitions, the remainder kept as `counters.update_debt` (saved in checkpoints,
    so a resumed run updates exactly when an uninterrupted one would)."""
    rounds, counters.update_debt = divmod(counters.update_debt + cfg.num_envs, cfg.train_frequency)
    return rounds


def crossed(step: int, stride: int, period: int) -> bool:
    """Whether `step`, just advanced by `stride` env steps, crossed a multiple of `period` (a target
    network's copy falls due once per period, whatever the number of envs)."""
    return step // period != (step - stride) // period


class EnvStep:
    """An env step in two calls, `send(actions)` then `recv()`, that a trainer runs its updates between.

    ale-py's vector env (envs.AtariEnv) plays the step on its C++ worker threads, which release the GIL,
    while the updates run: the env's time hides behind the learner's (0.5-0.9 ms an Atari step on 2
    CPU cores, against 23-33 ms a DQN update there, one every 4 steps; a larger share where an update
    runs on a GPU). Other envs step in `recv`. The trainers write the step's observation and action to
    the replay memory before `send` and its outcome after `recv` (ReplayMemory.add_observation and
    add_outcome): the updates draw exactly what they would after the whole step, as in the reference
    codes' order (step, store, update), and neither depends on the other's random numbers."""

    def __init__(self, env):
        self.env, self.aside = env, isinstance(env, envs.AtariEnv)
        self._actions = None

    def send(self, actions) -> None:
        if self.aside:
            self.env.send(actions)
        else:
            self._actions = actions

    def recv(self):
        return self.env.recv() if self.aside else self.env.step(self._actions)

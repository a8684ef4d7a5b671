"""Bad input never shows a traceback: for every trainer, every numeric flag fed 0, -1, nan and a huge
value and every path flag fed a file and a missing folder either trains or is one line on stderr.

In process through each trainer's parse-and-check (`lifecycle.load_config`), then, for what was
accepted, through the parts a run builds first (env, networks, memory, optimizers, data), so the suite
stays quick; a handful end to end as subprocesses."""
import dataclasses
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import torch

from agents import dqn, ppo, rainbow, replay, sac
from common import lifecycle, optimizers
from common.errors import UserError
from gans import dcgan

ROOT = Path(__file__).parent.parent
VALUES = {"zero": "0", "negative": "-1", "nan": "nan", "huge": None}  # huge: per type, below
PATH_FIELDS = {"logdir", "resume", "eval", "data_dir", "inception_weights"}
SIGNED = {"v_min", "v_max"}  # Rainbow's return support: negative values are meaningful


def numeric_fields(config_cls):
    """(name, element type, arity) of every int/float field, tuples included."""
    out = []
    for f in dataclasses.fields(config_cls):
        hint = typing.get_type_hints(config_cls)[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
        base = args[0]
        if typing.get_origin(base) is tuple:
            elems = [a for a in typing.get_args(base) if a is not Ellipsis]
            out.append((f.name, elems[0], len(typing.get_args(base)) if Ellipsis not in typing.get_args(base) else 2))
        elif base in (int, float) and base is not bool:
            out.append((f.name, base, 1))
    return out


def build_dqn(cfg):
    env = dqn.make_env(cfg, cfg.num_envs)
    try:
        q = dqn.make_q_network(cfg, env, torch.device("cpu"))
        dqn.make_optimizer(cfg, q.parameters())
        replay.for_env(env, cfg.buffer_size, cfg.num_envs, torch.device("cpu"))
    finally:
        env.close()


def build_rainbow(cfg):
    env = rainbow.make_env(cfg, cfg.num_envs)
    try:
        net = rainbow.make_network(cfg, env, torch.device("cpu"))
        rainbow.make_optimizer(cfg, net.parameters())
        replay.for_env(env, cfg.buffer_size, cfg.num_envs, torch.device("cpu"), n_step=cfg.n_step, gamma=cfg.gamma,
                       prioritized=True, alpha=cfg.priority_alpha)
    finally:
        env.close()


def build_sac(cfg):
    env = sac.make_env(cfg, cfg.num_envs)
    try:
        actor, critics = sac.make_networks(cfg, env, torch.device("cpu"))
        sac.Preconditioners(cfg, critics, actor).optimizer(critics.parameters(), cfg.q_lr, "critics")
        replay.for_env(env, cfg.buffer_size, cfg.num_envs, torch.device("cpu"), gamma=cfg.gamma)
    finally:
        env.close()


def build_ppo(cfg):
    env = ppo.make_env(cfg, cfg.num_envs)
    try:
        ppo.make_optimizer(cfg, ppo.make_agent(cfg, env, torch.device("cpu")).parameters())
    finally:
        env.close()


def build_dcgan(cfg):
    from gans.data import make_source

    dcgan.build_models(cfg, torch.device("cpu"))
    make_source(cfg.dataset, cfg.data_dir, cfg.batch_size, torch.device("cpu"), cfg.seed, cfg.image_size,
                cfg.download, 0, False)


TRAINERS = {
    "dqn": (dqn.TRAINER, ["--env", "CartPole-v1"], build_dqn),
    "rainbow": (rainbow.TRAINER, ["--env", "CartPole-v1"], build_rainbow),
    "ppo": (ppo.TRAINER, ["--env", "CartPole-v1"], build_ppo),
    "sac": (sac.TRAINER, ["--env", "Pendulum-v1"], build_sac),
    "dcgan": (dcgan.TRAINER, ["--dataset", "ring8"], build_dcgan),
}


def outcome(trainer, base, build, args):
    """"accepted" or "refused: LINE"; anything else (a traceback) fails the test with the case named."""
    try:
        cfg, _ = lifecycle.load_config(trainer, [*base, *args])
        build(cfg)
        return "accepted"
    except UserError as e:
        message = str(e)
        assert message and "\n" not in message, f"{args}: a message of more than one line: {message!r}"
        assert "Traceback" not in message
        return f"refused: {message}"


@pytest.mark.parametrize("name", TRAINERS)
def test_every_flag_with_bad_values(name, tmp_path, capsys):
    trainer, base, build = TRAINERS[name]
    base = [*base, "--logdir", str(tmp_path / "runs")]
    a_file = tmp_path / "a_file"
    a_file.write_bytes(b"not a folder, not a checkpoint")
    missing = tmp_path / "missing" / "folder"
    cases = []
    for field, kind, arity in numeric_fields(trainer.config_cls):
        for label, value in VALUES.items():
            if value is None:
                value = "1000000000000" if kind is int else "1e300"
            cases.append((f"{field}={label}", ["--" + field.replace("_", "-"), *[value] * arity], label, field))
    for field in PATH_FIELDS & {f.name for f in dataclasses.fields(trainer.config_cls)}:
        extra = ["--dataset", "folder", "--no-download"] if field == "data_dir" else []
        for label, value in (("file", a_file), ("missing", missing)):
            cases.append((f"{field}={label}", [*extra, "--" + field.replace("_", "-"), str(value)], label, field))

    results = {case: outcome(trainer, base, build, args) for case, args, _, _ in cases}
    capsys.readouterr()
    print(f"{name}: {len(cases)} cases, {sum(r != 'accepted' for r in results.values())} refused with one line")
    # The checks that must refuse do refuse (so this test can fail): nan for every float, non-positive
    # counts, files where folders or checkpoints belong.
    for case, args, label, field in cases:
        kind = dict((f, k) for f, k, _ in numeric_fields(trainer.config_cls)).get(field)
        if label == "nan" or (label == "negative" and field not in SIGNED):
            assert results[case].startswith("refused"), (case, results[case])
        if label in ("file", "missing") and field in ("resume", "eval", "data_dir"):
            assert results[case].startswith("refused"), (case, results[case])
        if field == "logdir" and label == "file":
            assert results[case].startswith("refused") and "is a file" in results[case]
        if field == "seed" and label == "huge":
            assert "--seed" in results[case]
    assert len(cases) >= 60


def test_scientific_notation_for_counts_is_accepted():
    cfg, _ = lifecycle.load_config(dqn.TRAINER, ["--env", "CartPole-v1", "--total-timesteps", "1e6"])
    assert cfg.total_timesteps == 1_000_000
    with pytest.raises(UserError, match="--total-timesteps") as e:
        lifecycle.load_config(dqn.TRAINER, ["--env", "CartPole-v1", "--total-timesteps", "2.5e-1"])
    assert "\n" not in str(e.value) and "╭" not in str(e.value)


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True, reason="root may write anywhere")
def test_read_only_folders_are_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(UserError, match="not writable"):
            lifecycle.load_config(dqn.TRAINER, ["--env", "CartPole-v1", "--logdir", str(ro / "runs")])
    finally:
        ro.chmod(0o755)


END_TO_END = [
    ("agents.dqn", ["--total-timesteps", "1e6x"], "--total-timesteps"),
    ("agents.dqn", ["--env", "CartPole-v1", "--buffer-size", "1000000000000"], "--buffer-size"),
    ("agents.dqn", ["--env", "CartPole-v1", "--hidden-sizes", "60000", "60000"], "parameters"),
    ("agents.dqn", ["--env", "LunarLander-v3"], "pip install"),
    ("agents.dqn", ["--env", "CartPole-v1", "--optimizer", "lbfgs"], "closure"),
    ("agents.rainbow", ["--env", "CartPole-v1", "--v-min", "5", "--v-max", "1"], "--v-min"),
    ("agents.rainbow", ["--env", "CartPole-v1", "--preset", "atari100k"], "--preset"),
    ("agents.sac", ["--env", "CartPole-v1"], "Box"),
    ("agents.sac", ["--env", "Pendulum-v1", "--base-optimizer", "lbfgs"], "--base-optimizer"),
    ("gans.dcgan", ["--dataset", "ring8", "--g-lr", "nan"], "--g-lr"),
    ("gans.dcgan", ["--dataset", "ring8", "--g-width", "1000000"], "parameters"),
]


@pytest.mark.parametrize("module,args,word", END_TO_END, ids=[" ".join(a) for _, a, _ in END_TO_END])
def test_end_to_end_one_line(module, args, word, tmp_path):
    if "LunarLander-v3" in args:
        try:
            import Box2D  # noqa: F401
            pytest.skip("Box2D is installed here")
        except ImportError:
            pass
    out = subprocess.run([sys.executable, "-m", module, *args, "--logdir", str(tmp_path)], capture_output=True,
                         text=True, timeout=300, cwd=ROOT)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and len(lines) == 1, out.stderr
    assert lines[0].startswith("error: ") and word in lines[0], lines[0]
    assert not list(tmp_path.iterdir())  # nothing was written


def refused(main, args, capsys, code=2) -> str:
    """Run a trainer's CLI entry in process; it must exit with `code` and one `error:` line on stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert e.value.code == code, err
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


FLOAT32 = [
    (dqn.main, ["--env", "CartPole-v1", "--learning-rate", "1e39"], "--learning-rate", "float32"),
    (dqn.main, ["--env", "CartPole-v1", "--gamma", "-3.5e38"], "--gamma", "float32"),
    (dcgan.main, ["--dataset", "ring8", "--g-betas", "0.5", "1e39"], "--g-betas", "float32"),  # a tuple of floats
    (dqn.main, ["--env", "CartPole-v1", "--learning-rate", "1e-50"], "--learning-rate", "0 in float32"),
]


@pytest.mark.parametrize("main,args,word,why", FLOAT32, ids=[" ".join(a[2:]) for _, a, _, _ in FLOAT32])
def test_numbers_a_float32_cannot_hold_are_one_line(main, args, word, why, tmp_path, capsys):
    line = refused(main, [*args, "--logdir", str(tmp_path / "runs")], capsys)
    assert word in line and why in line, line
    assert not list(tmp_path.iterdir())  # no run folder, not even --logdir


# 1,000 optimizer updates: one per env step from the first
THOUSAND_UPDATES = ["--env", "CartPole-v1", "--total-timesteps", "1000", "--learning-starts", "0",
                    "--train-frequency", "1", "--gradient-steps", "1", "--learning-rate", "0.001"]
SCHEDULES = [
    (["--lr-schedule", "exponential:gamma=10"], ("takes the learning rate to 1e+39 (1e+42 x --learning-rate 0.001) "
                                                 "at update 42 of this run's 1,000 optimizer updates")),
    (["--lr-schedule", "step:every=1e9"], ("never changes the learning rate within this run's 1,000 optimizer updates "
                                           "(its first change would come at update 1,000,000,000)")),
    (["--lr-schedule", "cosine:final=-0.5"], "makes the learning rate negative"),
    (["--lr-schedule", "warmup-linear:steps=10 then step:every=100,gamma=-1"],
     "negative (-1 x --learning-rate 0.001) at update 110"),
    (["--lr-schedule", "cyclic:half=10,low=-0.5"], "negative (-0.5 x --learning-rate 0.001) in its cyclic stage"),
    (["--lr-schedule", "exponential:gamma=1.2", "--lr-mult", "0=1e30"], "x --lr-mult 0=1e+30) at update 146 of"),
    (["--lr-mult", "0=1e39", "--learning-rate", "10"], "--lr-mult 0=1e+39 times --learning-rate 10"),
]


@pytest.mark.parametrize("args,says", SCHEDULES, ids=[" ".join(a) for a, _ in SCHEDULES])
def test_schedules_are_checked_for_what_they_do_over_the_run(args, says, tmp_path, capsys, monkeypatch):
    line = refused(dqn.main, [*THOUSAND_UPDATES, *args, "--logdir", str(tmp_path / "runs")], capsys)
    assert says in line, line
    assert line.startswith("error: --lr-schedule" if "--lr-schedule" in args else "error: --lr-mult"), line
    assert not list(tmp_path.iterdir())


def test_schedule_checks_over_a_long_run_and_the_old_call():
    cfg, _ = lifecycle.load_config(dqn.TRAINER, [*THOUSAND_UPDATES, "--lr-schedule", "exponential:gamma=1.0001"])
    optimizers.check_lr_schedule(cfg)  # without the run's length: as before (builds over 1,000 stand-in updates)
    optimizers.check_lr_schedule(cfg, 50_000, ("learning_rate",))  # 1.0001**50k = 148: fine
    with pytest.raises(UserError, match="at update 956,354 of this run's 10,000,000 optimizer updates"):
        optimizers.check_lr_schedule(cfg, 10_000_000, ("learning_rate",))  # closed form: nothing stepped 10M times
    for spec in ("linear", "cosine:final=0.1", "warmup-cosine:warmup=1000", "step:every=1e6",
                 "multistep:milestones=1e6;5e6", "cosine-restarts:period=1e5,mult=2", "cyclic:half=1000", "onecycle",
                 "warmup-linear:steps=1000 then exponential:gamma=0.999999", "plateau", "constant"):
        cfg.lr_schedule = spec
        optimizers.check_lr_schedule(cfg, 10_000_000, ("learning_rate",))
    cfg.lr_schedule = "linear"  # a run of one update cannot change its lr: not refused for that
    optimizers.check_lr_schedule(cfg, 1, ("learning_rate",))


TYPOS = [
    (dqn.Config, ["--lr", "1e-3"], "unknown flag --lr (did you mean --learning-rate, --lr-mult, --lr-schedule?)"),
    (sac.Config, ["--learning-rat", "1e-3"], "unknown flag --learning-rat (did you mean --learning-rate, "
                                             "--learning-starts?)"),
    (ppo.Config, ["--env", "CartPole-v1", "--n-envs", "4"], "unknown flag --n-envs (did you mean --num-envs?)"),
    (ppo.Config, ["--epochs=3"], "unknown flag --epochs (did you mean --update-epochs?)"),
    (dqn.Config, ["--env-id", "CartPole-v1"], "unknown flag --env-id (did you mean --env?)"),
    (dqn.Config, ["--cuda"], "unknown flag --cuda (did you mean --device?)"),
    (dcgan.Config, ["--lr", "2e-4"], "unknown flag --lr (did you mean --d-lr, --g-lr,"),
    (dqn.Config, ["--no-capture-vide"], "unknown flag --no-capture-vide (did you mean --no-capture-video"),
    (dqn.Config, ["--zzz"], "unknown flag --zzz; see"),
    (dqn.Config, ["--hidden-sizes", "64", "--hidden-sizes", "32"], "--hidden-sizes given twice: give all its values "
                                                                   "after one --hidden-sizes"),
    # a list flag whose type is `X | None` (types.UnionType, not typing.Union)
    (dcgan.Config, ["--g-betas", "0.5", "0.9", "--g-betas", "0.1", "0.2"], "--g-betas given twice"),
]


@pytest.mark.parametrize("config,args,says", TYPOS, ids=[" ".join(a) for _, a, _ in TYPOS])
def test_an_unknown_flag_points_at_the_flags_it_likely_meant(config, args, says):
    from common import cli

    with pytest.raises(UserError) as e:
        cli.parse(config, args, prog="python -m x")
    assert e.value.code == 2
    assert "\n" not in str(e.value) and str(e.value).startswith(says), str(e.value)


def test_a_list_flag_given_twice_is_refused_not_half_kept():
    from common import cli
    from studies import grid

    with pytest.raises(UserError, match="--set given twice"):
        cli.parse(grid.Config, ["--agent", "dqn", "--env", "x", "--set", "a=1", "--set=b=2"])
    cfg = cli.parse(grid.Config, ["--agent", "dqn", "--env", "x", "--set", "a=1", "b=2"])
    assert cfg.set == ("a=1", "b=2")


def test_known_flags_in_either_spelling_and_negative_values_still_parse():
    from common import cli

    cfg = cli.parse(rainbow.Config, ["--total_timesteps", "1000", "--v-min=-5", "--v-max", "5", "--no-capture-video"])
    assert (cfg.total_timesteps, cfg.v_min, cfg.v_max, cfg.capture_video) == (1000, -5, 5, False)
    cfg = cli.parse(dcgan.Config, ["--log-every", "7", "--save-every=9"])  # earlier names, still accepted
    assert (cfg.log_interval, cfg.checkpoint_interval) == (7, 9)

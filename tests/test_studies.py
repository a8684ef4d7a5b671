"""studies: the interval estimates against rliable's, grids that resume, Optuna sweeps whose workers
share a journal file or a PostgreSQL server, pruning, the claims' verdicts, and bad input."""
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import postgres_server
from common.events import read_scalars
from studies import claims, grid, stats, sweep

ROOT = Path(__file__).parent.parent
# A DQN run on CartPole that takes seconds: learning from step 500, an evaluation every 500 steps.
CHEAP_DQN = ["--env", "CartPole-v1", "--total-timesteps", "2000", "--eval-interval", "500",
             "--set", "learning_starts=500", "eval_episodes=3"]


def studies_cmd(module: str, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"studies.{module}", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=600, **kw)


# ------------------------------------------------------------------------------------------------
# Estimators
# ------------------------------------------------------------------------------------------------


def test_interval_estimates_equal_rliables():
    rliable = pytest.importorskip("rliable.library", reason="rliable is in the test extra: pip install -e '.[test]'")
    from rliable import metrics

    rng = np.random.RandomState(5)
    scores = rng.normal(size=(7, 3))  # 7 seeds x 3 tasks
    for ours, theirs in ((stats.iqm, metrics.aggregate_iqm), (stats.mean, metrics.aggregate_mean)):
        np.random.seed(11)  # rliable draws from numpy's global RandomState
        points, intervals = rliable.get_interval_estimates(
            {"x": scores}, lambda x: np.array([theirs(x)]), reps=3000)
        e = stats.interval(ours, scores, reps=3000, seed=11)
        assert e.point == pytest.approx(points["x"][0], abs=1e-12)
        assert [e.low, e.high] == pytest.approx(intervals["x"].ravel().tolist(), abs=1e-12)
    # Two settings resampled independently, with different numbers of seeds: a gain's interval.
    other = rng.normal(1.0, size=(5, 3))
    for a, b in ((scores, other), (scores, rng.normal(1.0, size=(7, 3)))):
        np.random.seed(12)
        points, intervals = rliable.get_interval_estimates(
            {"g": [a, b]}, lambda x, y: np.array([metrics.aggregate_mean(x) - metrics.aggregate_mean(y)]), reps=3000)
        e = stats.interval(lambda x, y: stats.mean(x) - stats.mean(y), a, b, reps=3000, seed=12)
        assert [e.point, e.low, e.high] == pytest.approx([points["g"][0], *intervals["g"].ravel()], abs=1e-12)


@pytest.mark.parametrize("n", [1, 3, 4, 5, 8, 10])
def test_iqm_is_the_25_percent_trimmed_mean(n):
    x = np.random.RandomState(n).normal(size=n)
    s = np.sort(x)
    cut = n // 4
    assert float(stats.iqm(x[:, None])) == pytest.approx(s[cut:n - cut].mean())
    scipy_stats = pytest.importorskip("scipy.stats")
    assert float(stats.iqm(x[:, None])) == pytest.approx(scipy_stats.trim_mean(x, 0.25))


def test_steps_to_reach_interpolates_between_evaluations():
    steps = np.array([1000.0, 2000.0, 3000.0, 4000.0])
    curves = np.array([[0.0, 10.0, 30.0, 40.0],    # 20 is reached a half-way between 2000 and 3000
                       [25.0, 30.0, 30.0, 30.0],   # at the first evaluation
                       [0.0, 5.0, 10.0, 15.0]])    # never
    out = stats.steps_to_reach(curves, steps, 20.0)
    assert out.tolist() == [2500.0, 1000.0, np.inf]


def test_sample_efficiency_gain_by_hand():
    steps = np.array([1.0, 2.0, 3.0, 4.0])
    treatment = np.array([[0.0, 50.0, 100.0, 100.0]])[:, None, :]  # one run each
    control = np.array([[0.0, 25.0, 50.0, 80.0]])[:, None, :]
    # the lower final mean is 80: the treatment reaches it at 1.6 + 1 = 2.6, the control at 4
    gain = claims.sample_efficiency(steps)(treatment, control)
    assert float(gain) == pytest.approx(4.0 / 2.6 - 1.0)


@pytest.mark.parametrize("low, high, claimed, said", [
    (0.10, 0.30, 0.22, "supported"),
    (0.05, 0.15, 0.22, "smaller than claimed"),
    (0.30, 0.50, 0.22, "larger than claimed"),
    (-0.10, 0.40, 0.22, "not supported"),
    (-0.40, -0.10, 0.22, "not supported"),
    (0.5, 2.0, None, "supported"),
    (-0.5, 2.0, None, "not supported"),
])
def test_verdicts(low, high, claimed, said):
    assert claims.verdict(stats.Estimate((low + high) / 2, low, high), claimed) == said


# ------------------------------------------------------------------------------------------------
# Grids
# ------------------------------------------------------------------------------------------------


def test_grid_interrupted_after_its_first_run_runs_the_rest_only(tmp_path):
    out = tmp_path / "grid"
    args = ["-u", "-m", "studies.grid", "--agent", "dqn", *CHEAP_DQN, "--optimizers", "rmsproptf", "adam",
            "--seeds", "1", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    said = []
    for line in proc.stderr:  # stop it as soon as its first run is done, while the second runs
        said.append(line)
        if line.startswith("[1/2] done"):
            proc.send_signal(signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, "".join(said)
    first = next((out / "runs" / "optimizer=rmsproptf").glob("*__dqn__1__*"))
    final_mtime = (first / "final.pt").stat().st_mtime

    again = studies_cmd("grid", *args[3:])
    assert again.returncode == 0, again.stderr
    assert "1 done already" in again.stderr
    assert "optimizer=rmsproptf seed 1" not in again.stderr.split("done already", 1)[1]
    assert "done optimizer=adam seed 1" in again.stderr
    assert (first / "final.pt").stat().st_mtime == final_mtime
    assert len(list((out / "runs").glob("*/*__dqn__1__*/final.pt"))) == 2

    # The report's final scores are the runs' evaluations of their final weights, which the runs also
    # logged to the HPARAMS dashboard.
    results = json.loads((out / "results.json").read_text())
    for run in results["runs"]:
        evals = read_scalars(run["folder"], "eval/episodic_return")
        assert evals[-1][1] == 2000 and run["final"] == pytest.approx(evals[-1][2])
        hp = read_scalars(run["folder"], "hparams/final_eval_return")
        assert hp and hp[-1][2] == pytest.approx(run["final"])
    for row in results["rows"]:
        assert row["seeds"] == 1 and row["final_mean"]["point"] == pytest.approx(
            next(r["final"] for r in results["runs"] if r["setting"] == row["setting"]))
    assert (out / "curves.png").stat().st_size > 10_000 and "| optimizer=adam | 1 |" in (out / "table.md").read_text()

    # The same folder with another config is refused, not mixed in.
    rest_args = args[3:]
    at = rest_args.index("eval_episodes=3") + 1
    other = studies_cmd("grid", *rest_args[:at], "gamma=0.9", *rest_args[at:])  # one more field in its --set
    assert (other.returncode == 2 and "pass another --out" in other.stderr
            and len(other.stderr.strip().splitlines()) == 1)


def test_a_run_stopped_after_its_last_step_resumes_into_its_end(tmp_path):
    """A signal during the final evaluation leaves checkpoint.pt at the budget and no final.pt: --resume
    then goes straight to the end of the run (the final evaluation and final.pt), not a refusal."""
    from agents import dqn

    args = ["--env", "CartPole-v1", "--total-timesteps", "1000", "--learning-starts", "500", "--eval-interval", "500",
            "--eval-episodes", "2", "--logdir", str(tmp_path)]
    dqn.main(args)
    run = next(tmp_path.glob("CartPole-v1__dqn__1__*"))
    (run / "final.pt").unlink()
    dqn.main(["--resume", str(run / "checkpoint.pt")])
    assert (run / "final.pt").exists()
    with pytest.raises(SystemExit) as e:  # now finished: a resume at the budget is refused
        dqn.main(["--resume", str(run / "checkpoint.pt")])
    assert e.value.code == 2


def test_evaluations_fall_on_multiples_of_the_interval_after_a_resume():
    from common.milestones import Milestones

    m = Milestones(1234, log_interval=100, eval_interval=1000, checkpoint_interval=0)
    assert (m.next_due("log"), m.next_due("eval"), m.next_due("checkpoint")) == (1300, 2000, float("inf"))
    assert not m.due("eval", 1999) and m.due("eval", 2003) and m.next_due("eval") == 3000


def test_yes_no_fields_become_flag_pairs():
    from studies.trainers import AGENTS, flags

    bools = AGENTS["dcgan"].bool_fields()
    assert {"download", "channels_last"} <= bools and "amp" not in bools  # --amp takes a value
    assert flags({"download": "False", "channels_last": "true", "amp": "bf16"}, bools) == [
        "--no-download", "--channels-last", "--amp", "bf16"]
    with pytest.raises(ValueError):
        flags({"download": "maybe"}, bools)


# ------------------------------------------------------------------------------------------------
# Sweeps
# ------------------------------------------------------------------------------------------------


def sweep_args(storage: str, logdir: Path) -> list[str]:
    return ["--agent", "dqn", *CHEAP_DQN, "--trials", "6", "--seeds", "1", "--workers", "2", "--storage", storage,
            "--logdir", str(logdir), "--reevaluate-seeds", "0", "--startup-trials", "2", "--sampler-seed", "0"]


def check_six_trials(storage_url: str, proc: subprocess.CompletedProcess):
    import optuna

    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="dqn-CartPole-v1", storage=sweep.open_storage(storage_url, heartbeat=False))
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == list(range(6))
    states = {t.state.name for t in trials}
    assert states <= {"COMPLETE", "PRUNED"}, [(t.number, t.state.name, t.user_attrs) for t in trials]
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers ran trials
    assert "| trial | state | value |" in proc.stdout


def test_two_workers_share_a_journal_file(tmp_path):
    storage = str(tmp_path / "sweep.log")
    check_six_trials(storage, studies_cmd("sweep", *sweep_args(storage, tmp_path / "runs")))


def test_two_workers_share_a_postgresql_server(tmp_path):
    why = postgres_server.missing()
    if why:
        pytest.skip(why)
    server = postgres_server.Server()
    try:
        url = server.start()
        check_six_trials(url, studies_cmd("sweep", *sweep_args(url, tmp_path / "runs")))
    finally:
        server.stop()


def test_a_trial_with_clearly_worse_evaluations_is_pruned():
    import optuna

    cfg = sweep.Config(agent="dqn", env="CartPole-v1", startup_trials=2, warmup_fraction=0.25)
    study = optuna.create_study(direction="maximize", pruner=sweep.make_pruner(cfg, budget=1000))
    curve = [(100, 20.0), (250, 50.0), (500, 100.0), (750, 150.0), (1000, 200.0)]
    for _ in range(3):  # trials that learn, over two seeds each
        trial = study.ask()
        for seed_index in range(2):
            report = sweep.Reporter(trial, seed_index, budget=1000)
            for step, score in curve:
                report(step, score)
        study.tell(trial, 200.0)
    bad = study.ask()
    report = sweep.Reporter(bad, 0, budget=1000)
    report(100, 5.0)  # within the warm-up (the first quarter of the first seed): not judged yet
    with pytest.raises(optuna.TrialPruned):
        report(500, 10.0)
    good = study.ask()
    report = sweep.Reporter(good, 1, budget=1000)  # a second seed is compared at the second seed's steps
    for step, score in curve:
        report(step, score + 1.0)
    assert good.storage.get_trial(good._trial_id).intermediate_values == {1000 + s: v + 1.0 for s, v in curve}


# ------------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, before any run starts
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("module, args, says", [
    ("grid", ["--agent", "dqn", "--env", "CartPole-v1", "--set", "no_such_field=1"], "not a config field"),
    ("grid", ["--agent", "dqn", "--env", "CartPole-v1", "--set", "seed=3"], "sets --seed itself"),
    ("grid", ["--agent", "dqn", "--env", "CartPole-v1", "--optimizers", "nosuch"], "setting optimizer=nosuch"),
    ("grid", ["--agent", "dcgan", "--env", "ring8", "--optimizers", "adam"], "GENERATOR/DISCRIMINATOR"),
    ("grid", ["--agent", "sac", "--env", "Pendulum-v1", "--optimizers", "kfac,kfac_combine=a,b"], "KEY=VALUE"),
    ("grid", ["--agent", "sac", "--env", "Pendulum-v1", "--optimizers", "kfac,tau=0.1", "--set", "tau=0.2"],
     "no field --set"),
    ("grid", ["--agent", "dqn", "--env", "NoSuchEnv-v0"], "NoSuchEnv"),
    ("grid", ["--agent", "dqn", "--env", "CartPole-v1", "--set", "learning_rate=-1"], "learning-rate"),
    ("grid", ["--agent", "dqn", "--env", "CartPole-v1", "--threshold", "nan"], "--threshold must be a finite"),
    ("sweep", ["--agent", "dqn", "--env", "CartPole-v1", "--workers", "2"], "needs --storage"),
    ("sweep", ["--agent", "dqn", "--env", "CartPole-v1", "--storage", "study.db"], "ends in .log"),
    ("sweep", ["--agent", "dqn", "--env", "CartPole-v1", "--trials", "0"], "--trials"),
    ("sweep", ["--agent", "dqn", "--env", "CartPole-v1", "--set", "learning_rate=1e-3"], "search space samples it"),
    ("claims", ["no-such-claim"], "no-such-claim"),
])
def test_bad_input_is_one_line(module, args, says, tmp_path, capsys):
    main = {"grid": grid.main, "sweep": sweep.main, "claims": claims.main}[module]
    with pytest.raises(SystemExit) as exit_:
        main(args + (["--out", str(tmp_path)] if module == "grid" else []))
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and says in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not list(tmp_path.iterdir())  # nothing was run or written


def test_an_optimizer_with_fields_of_its_own_is_one_setting():
    """`--optimizers adam kfac,kfac_combine=graft kfac,kfac_combine=sgd`: three settings, the adam one
    without the K-FAC field, crossed with a --set list."""
    from studies.trainers import AGENTS

    cfg = grid.Config(agent="sac", env="Pendulum-v1", optimizers=("adam", "kfac,kfac_combine=graft",
                                                                   "kfac,kfac_combine=sgd"), set=("tau=0.01,0.02",))
    settings, fixed = grid.settings_of(cfg, AGENTS["sac"], AGENTS["sac"].fields())
    assert [s.name for s in settings] == [
        "optimizer=adam,tau=0.01", "optimizer=adam,tau=0.02",
        "optimizer=kfac,kfac_combine=graft,tau=0.01", "optimizer=kfac,kfac_combine=graft,tau=0.02",
        "optimizer=kfac,kfac_combine=sgd,tau=0.01", "optimizer=kfac,kfac_combine=sgd,tau=0.02"]
    assert settings[2].flags() == ["--optimizer", "kfac", "--kfac-combine", "graft", "--tau", "0.01"]
    assert fixed == {}


@pytest.mark.parametrize("agent", ["sac", "ppo", "dqn"])
def test_every_sampled_trial_is_a_command_line_its_trainer_takes(agent, tmp_path):
    """The search spaces' samples (yes/no fields such as SAC's kfac_actor included) become flags that the
    trainer parses and checks, for many draws."""
    import optuna

    from common import lifecycle
    from studies.trainers import AGENTS

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    cfg = sweep.Config(agent=agent, env={"sac": "Pendulum-v1"}.get(agent, "CartPole-v1"), trials=1)
    trainer = AGENTS[agent].trainer()
    for _ in range(12):
        trial = study.ask()
        values = sweep.SPACES[agent](trial)
        args = sweep.run_args(cfg, AGENTS[agent], values, 1, tmp_path)
        parsed, _ = lifecycle.load_config(trainer, args)
        for key, value in values.items():
            assert getattr(parsed, key) == value, (key, args)
        study.tell(trial, 0.0)


def test_seeds_are_a_count_or_the_seeds_themselves():
    from common.errors import UserError
    from studies.trainers import seed_list

    assert seed_list(("5",)) == [1, 2, 3, 4, 5] and seed_list(3) == [1, 2, 3]  # a count, typed or from a claim
    assert seed_list(("3", "7", "11")) == seed_list(("3,7,11",)) == [3, 7, 11]
    assert seed_list(("4-6", "9")) == [4, 5, 6, 9] and seed_list(("7,",)) == [7] and seed_list(("2", "2")) == [2]
    for bad, said in ((("0",), "must be 1 to 10,000"), (("x",), "a count (5)"), (("a,b",), "whole numbers"),
                      ((",",), "name 1 to 10,000 seeds"), (("1000000000",), "each seed is a run"),
                      (("1-1000000000",), "at most 10,000"), (("3000000000,",), "seeds are 0 to 2,147,483,647")):
        with pytest.raises(UserError, match=re.escape(said)):
            seed_list(bad)

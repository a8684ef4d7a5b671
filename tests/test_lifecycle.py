"""The run lifecycle every trainer shares: run folders, resume over the checkpoint's config, device
chosen again on resume, --eval, refusals."""
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from agents import dqn
from common import checkpoint, lifecycle, run as runs
from common.errors import UserError
from gans import dcgan
from test_bad_input import refused  # a CLI refusal: one line on stderr, exit 2

TINY_DQN = ["--env", "CartPole-v1", "--total-timesteps", "400", "--learning-starts", "100", "--buffer-size", "500",
            "--train-frequency", "4", "--gradient-steps", "1", "--eval-interval", "200", "--eval-episodes", "2"]


def test_run_folders_are_unique_within_a_second(tmp_path):
    folders = {runs.new_run_folder(tmp_path, "ALE/Breakout-v5", "dqn", 1) for _ in range(3)}
    assert len(folders) == 3
    names = sorted(f.name for f in folders)
    stamp = names[0]
    assert stamp.startswith("ALE_Breakout-v5__dqn__1__") and {n.split("__")[3].split("_")[0] for n in names} <= {
        stamp.split("__")[3], str(int(time.time()))}


def test_resume_merges_flags_rewrites_config_and_picks_the_device_again(tmp_path, capsys):
    path = dqn.main([*TINY_DQN, "--device", "cpu", "--logdir", str(tmp_path)])
    folder = path.parent
    assert (folder / "best.pt").is_file()  # evaluation during training kept its best
    # As if the run had been made on a GPU machine: its config says cuda.
    saved = torch.load(folder / "checkpoint.pt", weights_only=True)
    saved["config"]["device"] = "cuda"
    checkpoint.save(folder / "checkpoint.pt", {k: v for k, v in saved.items() if k not in ("format", "kind")}, "dqn")
    capsys.readouterr()
    cfg, _ = lifecycle.load_config(dqn.TRAINER, ["--resume", str(folder / "checkpoint.pt"), "--total-timesteps", "600",
                                                 "--learning-rate", "1e-3"])
    assert cfg.device == "auto" and cfg.total_timesteps == 600 and cfg.learning_rate == 1e-3
    assert cfg.hidden_sizes == (256, 256) and cfg.buffer_size == 500  # the rest is the checkpoint's
    dqn.main(["--resume", str(folder / "checkpoint.pt"), "--total-timesteps", "600", "--learning-rate", "1e-3"])
    err = capsys.readouterr().err
    assert "changed settings: total-timesteps 400 -> 600, learning-rate 0.0023 -> 0.001" in err
    written = json.loads((folder / "config.json").read_text())
    assert written["total_timesteps"] == 600 and written["learning_rate"] == 1e-3
    assert torch.load(folder / "final.pt", weights_only=True)["global_step"] == 600


def test_resume_and_eval_refusals(tmp_path):
    path = dqn.main([*TINY_DQN, "--logdir", str(tmp_path)])
    with pytest.raises(UserError, match="exclude each other"):
        lifecycle.load_config(dqn.TRAINER, ["--resume", str(path), "--eval", str(path)])
    with pytest.raises(UserError, match="--hidden-sizes cannot change"):
        lifecycle.load_config(dqn.TRAINER, ["--resume", str(path), "--total-timesteps", "900", "--hidden-sizes", "8"])
    with pytest.raises(UserError, match="is a 'dqn' checkpoint, not 'dcgan'"):
        lifecycle.load_config(dcgan.TRAINER, ["--resume", str(path)])
    with pytest.raises(UserError, match="--logdir cannot change"):
        lifecycle.load_config(dqn.TRAINER, ["--resume", str(path), "--total-timesteps", "900", "--logdir", "elsewhere"])
    with pytest.raises(UserError, match="--seed cannot change"):
        lifecycle.load_config(dqn.TRAINER, ["--resume", str(path), "--total-timesteps", "900", "--seed", "7"])
    # the same env and optimizer, spelled otherwise, are not a change; another seed may evaluate
    cfg, _ = lifecycle.load_config(dqn.TRAINER, ["--resume", str(path), "--total-timesteps", "900",
                                                 "--env", "CartPole", "--optimizer", "Adam"])
    assert cfg.total_timesteps == 900
    assert lifecycle.load_config(dqn.TRAINER, ["--eval", str(path), "--seed", "7"])[0].seed == 7
    with pytest.raises(UserError, match="--rmsprop-eps is for rmsproptf and rmsprop"):
        lifecycle.load_config(dqn.TRAINER, ["--env", "CartPole-v1", "--optimizer", "adam", "--rmsprop-eps", "1e-5"])
    # a checkpoint of the earlier, mean-loss DQN plays but does not resume
    saved = torch.load(path, weights_only=True)
    del saved["loss"]
    old = checkpoint.save(tmp_path / "old" / "checkpoint.pt",
                          {k: v for k, v in saved.items() if k not in ("format", "kind")}, "dqn")
    cfg, loaded = lifecycle.load_config(dqn.TRAINER, ["--resume", str(old), "--total-timesteps", "900"])
    with pytest.raises(UserError, match="mean loss by an earlier version"):
        dqn.fit(cfg, loaded)


def test_dcgan_eval_prints_its_score(tmp_path, capsys):
    result = dcgan.main(["--dataset", "ring8", "--steps", "40", "--log-every", "20", "--logdir", str(tmp_path)])
    capsys.readouterr()
    scores = dcgan.main(["--eval", result["final"]])
    out = capsys.readouterr().out
    assert out.startswith("ring8: 2500 samples, ") and "of 8 modes" in out and "% high quality" in out
    assert scores["modes"] == result["modes"] and scores["high_quality"] == result["high_quality"]


V0_DQN = Path(__file__).parent / "data" / "v0_checkpoints" / "dqn.pt"  # step 1500, CartPole-v1




def failed(main, args, capsys) -> str:
    """A failure after the start (the trainer may have said what it built): exit 2, the error as the last line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err and err.count("error: ") == 1, err
    return err.strip().splitlines()[-1]


def a_run_folder(tmp_path) -> Path:
    """A run folder holding a checkpoint, made without training: the v0 DQN checkpoint and a config.json."""
    folder = tmp_path / "runs" / "CartPole-v1__dqn__3__1700000000"
    folder.mkdir(parents=True)
    shutil.copy(V0_DQN, folder / "checkpoint.pt")
    (folder / "config.json").write_text(json.dumps(torch.load(V0_DQN, weights_only=True)["config"]))
    return folder


def contents(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".lock"}


def test_a_second_writer_of_a_run_folder_is_refused(tmp_path, capsys):
    folder = a_run_folder(tmp_path)
    before = contents(folder)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        line = refused(dqn.main, ["--resume", str(folder / "checkpoint.pt"), "--total-timesteps", "1600"], capsys)
        assert str(folder) in line and f"(pid {holder.pid})" in line and "another process" in line, line
        assert contents(folder) == before  # config.json untouched, no event file
    finally:
        holder.kill()
        holder.wait()
    # the kernel released the dead holder's lock; a Run takes it, and frees it on close
    from common.run import Run, lock_folder

    run = Run(folder, dqn.Config(), resume_step=1501)
    with pytest.raises(UserError, match="being written by another process"):
        lock_folder(folder)
    run.close()
    lock_folder(folder).close()


HOLD_LOCK = """
import fcntl, os, sys, time
h = open(os.path.join(sys.argv[1], ".lock"), "a+")
fcntl.flock(h, fcntl.LOCK_EX | fcntl.LOCK_NB)
h.seek(0); h.truncate(); h.write(str(os.getpid())); h.flush()
print("held", flush=True)
time.sleep(120)
"""


def test_a_loose_checkpoint_resumes_into_a_new_run_folder(tmp_path, capsys):
    downloads = tmp_path / "Downloads"
    downloads.mkdir()
    shutil.copy(V0_DQN, downloads / "dqn.pt")
    logdir = tmp_path / "runs"
    # --logdir may be chosen (the checkpoint's own was /tmp/legacy/runs), and it is the folder checked
    (tmp_path / "a_file").write_text("")
    assert "--logdir" in refused(dqn.main, ["--resume", str(downloads / "dqn.pt"), "--total-timesteps", "1600",
                                            "--logdir", str(tmp_path / "a_file")], capsys)
    final = dqn.main(["--resume", str(downloads / "dqn.pt"), "--total-timesteps", "1600", "--logdir", str(logdir),
                      "--eval-interval", "0"])
    err = capsys.readouterr().err
    (folder,) = [p for p in logdir.iterdir() if p.is_dir()]
    assert folder.name.startswith("CartPole-v1__dqn__3__") and final == folder / "final.pt"
    assert err.count("is not in a run folder") == 1 and f"new run folder, {folder}" in err, err
    assert json.loads((folder / "config.json").read_text())["logdir"] == str(logdir)
    assert torch.load(final, weights_only=True)["global_step"] == 1600
    assert ([p.name for p in downloads.iterdir()] == ["dqn.pt"]
            and (downloads / "dqn.pt").read_bytes() == V0_DQN.read_bytes())
    from common.run import lock_folder

    lock_folder(folder).close()  # the finished run released its folder


class FirstStepFails(Exception):
    pass


REAL_OPEN_RUN = runs.open_run


def failing_start(monkeypatch, started: bool, error: BaseException):
    """open_run as the session will call it (started=False until its first step), then a failure."""
    opened = []

    def open_run(cfg, env, algo, resume_step, **kw):
        folder, run = REAL_OPEN_RUN(cfg, env, algo, resume_step, started=False)
        opened.append(folder)
        if started:
            run.mark_started()
        raise error

    monkeypatch.setattr(runs, "open_run", open_run)  # what the session opens its run with
    return opened


def test_a_run_folder_is_not_left_behind_when_the_start_fails(tmp_path, capsys, monkeypatch):
    logdir = tmp_path / "runs"
    args = [*TINY_DQN, "--hidden-sizes", "8", "--logdir", str(logdir)]
    opened = failing_start(monkeypatch, started=False, error=UserError("the first batch failed"))
    assert failed(dqn.main, args, capsys) == "error: the first batch failed"
    assert opened and not opened[0].exists() and not [p for p in logdir.iterdir() if p.is_dir()]
    opened = failing_start(monkeypatch, started=False, error=FirstStepFails("a bug"))
    with pytest.raises(FirstStepFails):  # not a user error: its traceback shows, and the folder goes
        dqn.main(args)
    assert opened and not opened[0].exists()
    # a run that started keeps its folder; a resumed folder is never removed
    opened = failing_start(monkeypatch, started=True, error=UserError("diverged"))
    failed(dqn.main, args, capsys)
    assert opened[0].is_dir()
    folder = a_run_folder(tmp_path / "resumed")
    opened = failing_start(monkeypatch, started=False, error=UserError("the first batch failed"))
    failed(dqn.main, ["--resume", str(folder / "checkpoint.pt"), "--total-timesteps", "1600"], capsys)
    assert opened == [folder] and (folder / "checkpoint.pt").read_bytes() == V0_DQN.read_bytes()


def test_a_run_says_where_it_writes_what_it_does_and_how_long_it_takes(tmp_path, capsys):
    path = dqn.main([*TINY_DQN, "--log-interval", "100", "--device", "cpu", "--logdir", str(tmp_path)])
    err = capsys.readouterr().err.splitlines()
    folder = str(path.parent)
    # at start: the folder, the device and the budget with what falls due on the way
    assert err[1] == f"run folder: {folder}"
    assert err[2] == "dqn on cpu: step 0 of 400 (eval every 200, checkpoint every 10,000)"
    # once updates run, the time left (said once), then each evaluation's start and result
    [eta] = [line for line in err if line.startswith("at ") and " steps left take about " in line]
    assert eta.endswith(f"run folder: {folder}")
    assert err.index("evaluating at step 200: 2 episodes") < \
        next(i for i, line in enumerate(err) if line.startswith("evaluation at step 200: 2 episodes, score "))
    assert err[-1] == f"run folder: {folder}"
    # --eval and --resume of a run folder take its checkpoint; a folder without one says what it holds
    assert len(dqn.main(["--eval", folder, "--eval-episodes", "1"])) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("")
    with pytest.raises(UserError, match=r"--eval .*empty: a folder without final.pt or best.pt or checkpoint.pt; "
                                        r"it holds notes.txt"):
        lifecycle.load_config(dqn.TRAINER, ["--eval", str(empty)])


def test_the_time_left_is_reckoned_at_the_rate_since_updates_began(tmp_path, capsys, monkeypatch):
    # The first log after updates began covers warm-up steps too, at many times the training rate:
    # Rainbow's atari100k preset said 23 min for a run that took 62. The estimate takes the rate since
    # the first update (what the benchmarks read), made 7 steps/s here to tell the two apart.
    from common.milestones import Milestones

    monkeypatch.setattr(Milestones, "training_sps", lambda self, step: 7.0 if self.learning else None)
    dqn.main([*TINY_DQN, "--log-interval", "100", "--eval-interval", "0", "--logdir", str(tmp_path)])
    [eta] = [line for line in capsys.readouterr().err.splitlines() if " steps left take about " in line]
    assert eta.startswith("at 7 steps/s, the ")
    left = int(eta.split("the ")[1].split(" steps")[0].replace(",", ""))
    assert 0 < left <= 300  # said at a log after updates began at step 100


def test_a_budget_that_ends_before_learning_starts_is_said_at_start(tmp_path, capsys):
    dqn.main(["--env", "CartPole-v1", "--total-timesteps", "300", "--learning-starts", "1000", "--eval-interval", "0",
              "--logdir", str(tmp_path)])
    assert ("note: --total-timesteps 300 ends before learning starts at step 1,000 (--learning-starts 1,000): "
            "this run plays without a single update") in capsys.readouterr().err

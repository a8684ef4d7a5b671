"""bench/results.py, the results suite: its smoke entry end to end (grid, event files, figure, page), its
measures against hand-computed ones, and every entry's grid accepted by the trainers."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from common import cli
from common.events import Curve
from studies import grid

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import results  # noqa: E402


def test_smoke_entry_runs_from_grid_to_page(tmp_path):
    out = subprocess.run([sys.executable, "bench/results.py", "smoke", "--out", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads((tmp_path / "results" / "ppo-hopper.json").read_text())
    (run,) = data["settings"][0]["runs"]
    assert run["eval"]["steps"][-1] == 4096  # the evaluation of the final weights
    assert run["final_eval"] == run["eval"]["values"][-1] > 0
    assert isinstance(run["final_eval_cut"], int)  # the trainer logs how many its evaluation budget ended
    assert run["train_episodes_last"] > 0 and run["train_last"] > 0  # Hopper's episodes end early untrained
    assert 0 < run["wall_s"] < 3600
    assert (tmp_path / "results" / "ppo-hopper.png").stat().st_size > 5_000
    page = (tmp_path / "results.md").read_text()
    assert "| [ppo-hopper](#ppo-hopper) | 4,096 | 1 | " in page
    assert "2,382.9 +/- 271.7 (train)" in page  # CleanRL's figure beside ours
    assert "![ppo-hopper](results/ppo-hopper.png)" in page
    assert "## rainbow-100k-roadrunner" in page and "python bench/results.py run rainbow-100k-roadrunner" in page


def test_training_episode_measure_is_the_mean_over_the_last_tenth_of_the_budget():
    steps = np.array([100, 850, 899, 900, 950, 1000])
    returns = np.array([1.0, 2.0, 3.0, 10.0, 20.0, 30.0])
    curve = Curve(steps, returns, np.arange(6.0), 0.0)
    assert results.train_last(curve, 1000) == (20.0, 3)  # 900, 950 and 1000: (10 + 20 + 30) / 3
    assert results.train_last(curve, 10_000) == (None, 0)  # no episode ended in 9,000-10,000
    b = results.binned(curve, 1000)
    # 50 bins of 20 steps: 100 alone, 850 alone, 899 with 880-900's, then 900, 950 and 1000 (the last bin)
    assert b["values"] == [1.0, 2.0, 3.0, 10.0, 20.0, 30.0]


def hand_data(finals, entry_name="rainbow-100k-kangaroo"):
    entry = results.BY_NAME[entry_name]
    runs = [{"seed": i + 1, "eval": {"steps": [50_000, 100_000], "values": [f / 2, f]}, "final_eval": f,
             "wall_s": 1800.0, "start": 1000.0 * i, "end": 1000.0 * i + 1800.0, "train_last": f / 2}
            for i, f in enumerate(finals)]
    return {"entry": results.asdict(entry), "budget": entry.budget, "settings": [{"label": "default", "runs": runs}]}


def test_human_normalized_score_and_first_step_reaching_the_threshold():
    data = hand_data([52.0 + 0.25 * (3035.0 - 52.0), 52.0 + 0.75 * (3035.0 - 52.0)])
    (row,) = results.setting_rows(data)
    assert row["hns"] == pytest.approx(0.5)
    assert row["hours"] == pytest.approx(2800 / 3600)  # side by side: first start to last end
    run = data["settings"][0]["runs"][1]
    assert results.first_reach(run, run["final_eval"] / 2) == 50_000
    assert results.first_reach(run, run["final_eval"] + 1) is None


def test_ours_beside_a_reference():
    row = {"budget": 1000, "final": {"point": 900.0, "low": 700.0, "high": 1100.0},
           "train": {"point": 500.0, "low": 450.0, "high": 550.0}}
    assert results.against(row, {"measure": "train", "value": 600.0, "spread": 100.0}) == (
        "training episodes level with the reference (our mean within its published spread)")
    assert results.against(row, {"measure": "train", "value": 700.0, "spread": 100.0}) == (
        "training episodes below the reference (71% of it; outside our interval)")
    # outside its spread but inside our interval (with 3 seeds, their range): said as no clear difference
    assert results.against(row, {"measure": "eval", "value": 1000.0, "spread": 10.0}) == (
        "final evaluation below the reference (90% of it; the reference lies inside our interval, so no clear "
        "difference)")
    assert results.against(row, {"measure": "eval", "value": 600.0}) == (
        "final evaluation above the reference (150% of it; outside our interval)")
    one_seed = {"budget": 1000, "final": {"point": 5.0, "low": None, "high": None}, "train": None}
    assert results.against(one_seed, {"measure": "eval", "value": -20.0}) == (
        "final evaluation above the reference (+25.0)")  # no ratio to a negative score, no interval
    assert results.against(row, {"measure": "train", "value": 600.0, "step": 10_000}) == ""  # another budget


def test_references_of_one_measure_are_told_apart_by_name():
    # two evaluation references (Tianshou's, PFRL's read off a plot): each verdict and cell names whose it is
    row = {"budget": 1000, "final": {"point": 900.0, "low": 700.0, "high": 1100.0}, "train": None}
    tianshou = asdict(results.Reference(1500.0, "t", "eval", 100.0, name="Tianshou"))
    pfrl = asdict(results.Reference(1340.0, "p", "eval", 790.0, name="PFRL", digits=0))
    assert results.against(row, tianshou) == "final evaluation below Tianshou's (60% of it; outside our interval)"
    assert results.against(row, pfrl) == "final evaluation level with PFRL's (our mean within its published spread)"
    assert results.reference_cell({"references": [tianshou, pfrl]}) == (
        "Tianshou 1,500.0 +/- 100.0 (eval); PFRL 1,340 +/- 790 (eval)")
    entry = results.Entry("e", "sac", "Hopper-v5", 1000, 3, [results.Reference(1800.0, "d", "train", name="Dopamine")],
                          "", minutes=1)
    assert results.beside_training_return({"final_mean": {"point": 900.0}}, entry).startswith(
        "; 50% of Dopamine's training return (the study kept no training-episode figure")


def test_page_from_hand_made_entries(tmp_path):
    data = hand_data([800.0, 1000.0])

    def write_entry():
        (tmp_path / "rainbow-100k-kangaroo.json").write_text(json.dumps(
            {**data, "command": "c", "grid": "g", "finished": "2026-12-06",
             "machine": {"cpu": "x", "cores": 2, "gpu": None, "torch": "t"}}))

    write_entry()
    page = tmp_path / "results.md"
    results.write_page(tmp_path, page)
    text = page.read_text()
    assert "| [rainbow-100k-kangaroo](#rainbow-100k-kangaroo) | 100,000 | 2 | 900.0 [800, 1,000] |" in text
    assert "human-normalized 0.28" in text  # ((800 - 52) + (1000 - 52)) / 2 / (3035 - 52)
    assert "779.3 (eval), HNS 0.24" in text  # DER's figure, normalized alike
    # 900 / 779.3, 779.3 below [800, 1,000]
    assert "final evaluation above the reference (115% of it; outside our interval)" in text
    assert "900.0 [800, 1,000] (per seed: 800.0, 1,000.0), training episodes" in text
    # played over full games: those are the final evaluation, the in-training one's last point said beside
    for run in data["settings"][0]["runs"]:
        run.update(final_eval_in_training=run["final_eval"] / 2, full_games=[run["final_eval"]])
    write_entry()
    results.write_page(tmp_path, page)
    assert ("the final evaluation is full games of final.pt (--eval), the in-training evaluation's last point "
            "400.0, 500.0") in page.read_text()
    assert "refilled" not in page.read_text()
    # a run resumed with its replay memory refilled is said: it did not learn as an uninterrupted run
    data["settings"][0]["runs"][1].update(resumed=True, refilled=True)
    write_entry()
    results.write_page(tmp_path, page)
    assert ("; seed 2 resumed with the replay memory refilled (run without --save-replay): not what an "
            "uninterrupted run learns") in page.read_text()
    # the SAC entries show the committed K-FAC study's finals until run here
    assert ("[sac-halfcheetah (optimizer=kfac, lr 3e-4)](#sac-halfcheetah) | 100,000 | 3 | 4,206.8 [3,627, 5,036]"
            in text)
    # beside Dopamine's training return, said as another measure: 4,206.8 / 5,469.7
    assert "4,206.8 [3,627, 5,036] over 3 seeds" in text
    assert "; 77% of Dopamine's training return (the study" in text
    # an earlier row whose setting no longer says what ran (the default rate changed) shows its label
    assert "[sac-hopper (optimizer=adam, lr 3e-4)](#sac-hopper) | 100,000 | 3 | 774.4 [468, 982]" in text
    assert "[sac-hopper (optimizer=kfac, graft, lr 1e-3)](#sac-hopper) | 100,000 | 5 | 877.6" in text
    assert "[sac-hopper (optimizer=kfac, eigen-adam, lr 1e-3, 5 seeds)](#sac-hopper) | 100,000 | 5 | 1,685.0" in text


def test_wall_time_counts_the_time_some_run_was_running():
    data = hand_data([1.0, 2.0, 3.0])
    runs = data["settings"][0]["runs"]
    # two side by side (0-1,800 and 1,000-2,800 s), one a day later (90,000-91,800): 2,800 + 1,800 s
    for run, (start, end) in zip(runs, [(0.0, 1800.0), (1000.0, 2800.0), (90_000.0, 91_800.0)]):
        run.update(start=start, end=end)
    assert results.entry_hours(data) == pytest.approx(4600 / 3600)


CARTPOLE_ENTRY = results.Entry("t", "dqn", "CartPole-v1", 600, 1, [], "", minutes=1, eval_interval=300,
                               sets=("learning_starts=100", "eval_episodes=2"))


def study_grid(out: Path, *extra: str) -> Path:
    """A study grid of the CartPole entry's protocol (plus `extra` fields), its env typed as an alias;
    returns the folder of its one setting's runs."""
    grid.main(["--agent", "dqn", "--env", "CartPole", "--seeds", "1", "--total-timesteps", "600", "--eval-interval",
               "300", "--out", str(out), "--set", "learning_starts=100", "eval_episodes=2", *extra])
    return out / "runs" / "default"


def test_adopt_takes_a_studys_runs_of_the_entrys_protocol_and_refuses_any_other(tmp_path):
    study, other = study_grid(tmp_path / "study"), study_grid(tmp_path / "other", "gamma=0.9")
    out = tmp_path / "entry"
    with pytest.raises(SystemExit, match=r"trained with gamma=0.9, entry t asks for 0.99 with default: not the "):
        results.adopt(CARTPOLE_ENTRY, "default", other, out)
    with pytest.raises(SystemExit, match="entry t has no setting 'optimizer=adam'; its settings: default"):
        results.adopt(CARTPOLE_ENTRY, "optimizer=adam", study, out)
    with pytest.raises(SystemExit, match="holds no finished dqn run of seed 1"):
        results.adopt(CARTPOLE_ENTRY, "default", tmp_path, out)
    # a run trained on past its final.pt (a checkpoint newer than it) is not a finished one
    stale = tmp_path / "stale" / "runs" / "default"
    shutil.copytree(study, stale)
    (run,) = stale.glob("*__dqn__1__*")
    (run / "checkpoint.pt").write_bytes(b"")
    later = (run / "final.pt").stat().st_mtime + 60
    os.utime(run / "checkpoint.pt", (later, later))
    with pytest.raises(SystemExit, match="holds no finished dqn run of seed 1"):
        results.adopt(CARTPOLE_ENTRY, "default", stale, out)
    assert not out.exists()  # nothing copied by a refusal

    (made,) = results.adopt(CARTPOLE_ENTRY, "default", study, out)
    (source,) = study.glob("*__dqn__1__*")
    assert made == out / "runs" / "default" / source.name and (made / "final.pt").exists()
    assert (made / results.ADOPTED).read_text().strip() == str(source)  # (outside the repository: as given)
    assert results.adopt(CARTPOLE_ENTRY, "default", study, out) == []  # already there: left as it is
    # the entry's grid takes it as done (its config checked again there): nothing trains
    data = results.run_entry(CARTPOLE_ENTRY, out, tmp_path / "docs")
    (run,) = data["settings"][0]["runs"]
    assert run["adopted_from"] == str(source) and run["eval"]["steps"][-1] == 600
    assert results.adopted_said(data) == (
        " Its runs are a study's that ran this protocol, taken by `python bench/results.py adopt` (which checked "
        f"each run's config against the entry's grid): default from `{study}`.")


def test_a_grid_compares_what_a_config_means_and_uses():
    """A SAC run with Adam recorded the K-FAC defaults of its day and how its rates were typed: neither
    tells it from a run of today's defaults; what it runs (its rates, its env under another spelling) does."""
    from agents import sac

    then = {"env": "Hopper", "optimizer": "adam", "kfac_combine": "graft", "learning_rate": 1e-3, "q_lr": 1e-3,
            "seed": 3, "total_timesteps": 5}
    now = {**then, "env": "Hopper-v5", "kfac_combine": "eigen-adam", "learning_rate": None, "seed": 1,
           "total_timesteps": 9}
    assert grid.comparable(then, sac.TRAINER) == grid.comparable(now, sac.TRAINER)
    assert grid.comparable({**then, "q_lr": 3e-4}, sac.TRAINER) != grid.comparable(now, sac.TRAINER)
    # under K-FAC the combination is the optimizer's own
    assert (grid.comparable({**then, "optimizer": "kfac"}, sac.TRAINER)
            != grid.comparable({**now, "optimizer": "kfac"}, sac.TRAINER))
    # a K-FAC run from before --kfac-combine existed ran what its absence meant then (base), not today's default
    older = {k: v for k, v in then.items() if k != "kfac_combine"} | {"optimizer": "kfac"}
    assert grid.comparable(older, sac.TRAINER)["kfac_combine"] == "base"


@pytest.mark.parametrize("entry", [e for e in results.ENTRIES if e.earlier], ids=lambda e: e.name)
def test_every_earlier_study_an_entry_names_is_committed_with_its_setting(entry):
    rows = results.earlier_rows(entry)
    assert [label for _, label, _ in rows] == [e[-1] for e in entry.earlier]  # each setting found, once
    for path, _, row in rows:
        # at least the entry's seeds (a study may have run more to separate two settings)
        assert row["seeds"] >= entry.seeds and (ROOT / path.replace("results.json", "curves.png")).is_file()


def test_page_says_when_no_evaluation_reached_the_threshold(tmp_path):
    data = hand_data([10.0], "ppo-pong")  # evaluations 5, 10 against Pong's 18
    (tmp_path / "ppo-pong.json").write_text(json.dumps(
        {**data, "command": "c", "grid": "g", "finished": "2026-12-06",
         "machine": {"cpu": "x", "cores": 2, "gpu": None, "torch": "t"}}))
    results.write_page(tmp_path, tmp_path / "results.md")
    assert "; no evaluation reached 18 (0 of 1 seeds)" in (tmp_path / "results.md").read_text()


def test_listing_says_how_many_seeds_ran(tmp_path, monkeypatch, capsys):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "rainbow-100k-kangaroo.json").write_text(json.dumps(hand_data([800.0, 1000.0])))
    (tmp_path / "results" / "ppo-pong.json").write_text(json.dumps(hand_data([10.0], "ppo-pong")))
    monkeypatch.setattr(results, "DOCS", tmp_path)
    results.listing()
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert lines["rainbow-100k-kangaroo"].endswith("2 of 3 seeds")  # the entry asks for 3
    assert lines["ppo-pong"].endswith("done")  # it asks for 1
    assert lines["ppo-hopper"].endswith("-")  # not run


@pytest.mark.parametrize("entry", results.ENTRIES, ids=lambda e: e.name)
def test_every_entry_is_a_grid_its_trainer_takes(entry, tmp_path):
    cfg = cli.parse(grid.Config, entry.grid_args(tmp_path / entry.name), prog="python -m studies.grid")
    plan = grid.plan_grid(cfg, "test")
    assert len(plan["plans"]) == entry.seeds * max(1, len(entry.optimizers))
    # every field the entry sets reaches the trainer's command line
    flags = " ".join(plan["base"])
    for item in entry.sets:
        key, value = item.split("=")
        flag = f"--{key.replace('_', '-')}"
        said = {"true": flag, "false": "--no-" + flag[2:]}.get(value, f"{flag} {value}")  # yes/no: a flag
        assert f"{said} " in f"{flags} "
    assert all(p.status == "pending" for p in plan["plans"])


def test_full_games_of_final_pt_are_the_final_evaluation_and_kept(tmp_path, monkeypatch):
    from agents import dqn

    monkeypatch.chdir(tmp_path)
    run = dqn.train(dqn.Config(env="CartPole-v1", total_timesteps=600, learning_starts=100, eval_episodes=4,
                               logdir=str(tmp_path / "runs")))
    entry = results.Entry("t", "dqn", "CartPole-v1", 600, 1, [], "", minutes=1, full_games=True)
    scores = results.full_game_scores(entry, run.folder)
    # the trainer's --eval of final.pt: its config's 4 episodes, full games, the policy as trained
    assert len(scores) == 4 and all(s >= 8 for s in scores)  # CartPole gives 1 per step, at least 8 steps
    assert json.loads((run.folder / "full_games.json").read_text())["scores"] == scores
    (run.folder / "full_games.json").write_text(json.dumps({"scores": [1.0]}))
    assert results.full_game_scores(entry, run.folder) == [1.0]  # kept: not played again
    rec = results.run_record(run.folder, 1, 600, False, [2.0, 4.0])
    assert rec["final_eval"] == 3.0 and rec["final_eval_in_training"] == run.final_eval
    assert rec["full_games"] == [2.0, 4.0]
    with pytest.raises(SystemExit, match="no final.pt in"):  # one line, not a traceback
        results.full_game_scores(entry, tmp_path)



@pytest.mark.parametrize("args,says", [
    (["run", "nope"], "error: no entry nope; the entries: ppo-hopper,"),
    (["run", "rainbow-100k-kangaroo", "--seeds", "0"], "error: --seeds must be at least 1 (got 0)"),
    (["run", "rainbow-100k-kangaroo", "--workers", "-1"], "error: --workers must be at least 1 (got -1)"),
    (["run", "rainbow-100k-kangaroo", "--workers", "two"], "error: argument --workers: invalid int value: 'two'; "
                                                           "see python bench/results.py run --help"),
    (["frob"], "error: argument what: invalid choice: 'frob'"),
    (["adopt", "nope", "default", "runs"], "error: no entry nope; the entries: ppo-hopper,"),
    (["adopt", "sac-hopper", "optimizer=kfac", "no/such/folder"], "error: no/such/folder is not a folder"),
    (["adopt", "sac-hopper", "default", "runs"], "error: entry sac-hopper has no setting 'default'; its settings: "
                                                 "optimizer=adam, optimizer=kfac"),
])
def test_bad_input_is_one_line_and_runs_nothing(args, says):
    out = subprocess.run([sys.executable, "bench/results.py", *args], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode != 0 and says in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr

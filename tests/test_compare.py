"""studies.compare on short runs it makes: its table against the values the runs logged, its figure, its errors."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from studies import compare
from test_tensorboard import logged, short_run  # noqa: F401 (logged is a fixture)

TAG = "charts/episodic_return"
LAST = 5


def expected_numbers(logged, runs: list[Path]) -> dict:  # noqa: F811
    """Final value and area per step of each run, from what it logged, then mean and std over the runs."""
    finals, areas = [], []
    for run in runs:
        points = logged[(run.name, TAG)]
        steps = np.array([s for _, _, s, _ in points], dtype=float)
        values = np.float32([v for _, _, _, v in points]).astype(float)  # as the event file stores them
        finals.append(values[-LAST:].mean())
        area = sum((values[i] + values[i + 1]) / 2 * (steps[i + 1] - steps[i]) for i in range(len(steps) - 1))
        areas.append(area / (steps[-1] - steps[0]))
    return {"seeds": len(runs), "final": np.mean(finals), "final_std": np.std(finals),
            "auc": np.mean(areas), "auc_std": np.std(areas)}


def table_row(out: str, group: str) -> dict:
    """The printed table's row for `group`, parsed back into numbers."""
    [line] = [line for line in out.splitlines() if f"  {group}  " in line]
    env, label, seeds, steps, final, auc = re.split(r"\s{2,}", line.strip())
    final_mean, final_std = map(float, final.split("+/-"))
    auc_mean, auc_std = map(float, auc.split("+/-"))
    return {"env": env, "seeds": int(seeds), "steps": int(steps), "final": final_mean, "final_std": final_std,
            "auc": auc_mean, "auc_std": auc_std}


def pixels_of(image: np.ndarray, hex_colour: str) -> int:
    rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(image[..., :3].astype(int) - rgb).sum(axis=-1) < 30).sum())


def test_table_matches_the_logged_values_and_the_figure_has_both_groups(tmp_path, logged, capsys):  # noqa: F811
    logdir = tmp_path / "runs"
    # Optimizer and learning rate typed, so that no preset of the env's family decides them.
    rmsprop = [short_run(logdir, "--seed", str(seed), "--optimizer", "rmsproptf", "--learning-rate", "2.5e-4")
               for seed in (1, 2)]
    adam = [short_run(logdir, "--seed", "3", "--optimizer", "adam", "--learning-rate", "1e-3")]
    capsys.readouterr()

    figure = tmp_path / "curves.png"
    rows = compare.main([str(logdir), "--tag", TAG, "--out", str(figure), "--last", str(LAST)])
    out = capsys.readouterr().out
    # The groups differ in optimizer and learning rate, so their labels name those two fields.
    for group, runs in (("dqn / optimizer=rmsproptf, learning_rate=0.00025", rmsprop),
                        ("dqn / optimizer=adam, learning_rate=0.001", adam)):
        expected = expected_numbers(logged, runs)
        printed = table_row(out, group)
        assert printed["env"] == "CartPole-v1" and printed["seeds"] == expected["seeds"]
        assert printed["steps"] == max(logged[(run.name, TAG)][-1][2] for run in runs)  # the last episode's
        for key in ("final", "final_std", "auc", "auc_std"):
            assert printed[key] == pytest.approx(expected[key], abs=0.0051), (group, key)  # printed to 2 decimals
        [row] = [r for r in rows if r["group"] == group]
        for key in ("final", "final_std", "auc", "auc_std"):
            assert row[key] == pytest.approx(expected[key], rel=1e-9, abs=1e-9), (group, key)
    assert expected_numbers(logged, rmsprop)["final_std"] > 0  # two different seeds: a real spread
    assert len(rows) == 2

    # Naming the run folders themselves, in any order, is the same as naming the folder that holds them.
    again = compare.main([*map(str, reversed(rmsprop + adam)), "--tag", TAG, "--out", str(figure),
                          "--last", str(LAST)])
    assert again == rows

    # Both groups are drawn in both panels (against steps, left; against wall-clock time, right), each in
    # its colour: labels sorted, so "dqn / optimizer=adam, ..." gets matplotlib's first colour and
    # rmsproptf the second.
    image = np.asarray(Image.open(figure).convert("RGB"))
    assert image.shape[:2] == (420, 1200)
    left, right = image[:, :600], image[:, 600:]
    for half in (left, right):
        assert pixels_of(half, "#1f77b4") > 200 and pixels_of(half, "#ff7f0e") > 200


def fake_run(logdir: Path, name: str, values: list[float], config: dict | None) -> Path:
    """A run folder `name` with `values` logged as TAG at steps 10, 20, ... and `config` as its config.json."""
    run = logdir / name
    writer = SummaryWriter(str(run))
    for i, v in enumerate(values):
        writer.add_scalar(TAG, v, 10 * (i + 1))
    writer.close()
    if config is not None:
        (run / "config.json").write_text(json.dumps(config))
    return run


def test_groups_by_every_config_field_but_the_seed_and_run_plumbing(tmp_path, capsys):
    logdir = tmp_path / "runs"
    base = {"env": "CartPole-v1", "optimizer": "adam", "learning_rate": 1e-3, "hidden_sizes": [64, 64],
            "logdir": str(logdir), "device": "cpu", "capture_video": False, "resume": None, "eval": None}
    # A learning-rate sweep: seeds 1-3 at 1e-3, seeds 1-2 at 1e-4; each run logs a constant, its seed plus
    # 10 at 1e-3 and 20 at 1e-4, so a group's final value is the mean over exactly its seeds.
    sweep_runs = []
    for lr, offset, seeds, started in ((1e-3, 10.0, (1, 2, 3), 100), (1e-4, 20.0, (1, 2), 101)):
        for seed in seeds:
            sweep_runs.append(fake_run(logdir, f"CartPole-v1__dqn__{seed}__{started}", [offset + seed] * 6,
                                       {**base, "seed": seed, "learning_rate": lr}))
    # Seed 4 at 1e-3, differing only in seed, logdir, device and video: it joins the 1e-3 group. The
    # fields of its config.json in another order make no difference either.
    elsewhere = tmp_path / "other"
    joins = {**base, "seed": 4, "logdir": str(elsewhere), "device": "cuda:0", "capture_video": True}
    fake_run(elsewhere, "CartPole-v1__dqn__4__200", [14.0] * 6, dict(reversed(list(joins.items()))))
    # One field more than the rest (here the network) is a setting of its own.
    fake_run(logdir, "CartPole-v1__dqn__9__300", [99.0] * 6, {**base, "seed": 9, "hidden_sizes": [32]})
    # Without config.json a run groups by the env and algo of its folder name alone.
    fake_run(logdir, "Acrobot-v1__dqn__1__400", [-100.0] * 6, None)
    fake_run(logdir, "Acrobot-v1__dqn__2__400", [-200.0] * 6, None)
    capsys.readouterr()

    rows = compare.main([str(logdir), str(elsewhere), "--tag", TAG, "--out", str(tmp_path / "c.png"),
                         "--last", "3"])
    out = capsys.readouterr().out
    got = {(r["env"], r["group"]): (r["seeds"], r["final"], r["final_std"]) for r in rows}
    assert got == {
        ("Acrobot-v1", "dqn"): (2, pytest.approx(-150.0), pytest.approx(50.0)),
        ("CartPole-v1", "dqn / learning_rate=0.0001, hidden_sizes=[64, 64]"): (2, pytest.approx(21.5),
                                                                             pytest.approx(0.5)),
        ("CartPole-v1", "dqn / learning_rate=0.001, hidden_sizes=[32]"): (1, pytest.approx(99.0), 0.0),
        ("CartPole-v1", "dqn / learning_rate=0.001, hidden_sizes=[64, 64]"): (4, pytest.approx(12.5),
                                                                            pytest.approx(np.std([11, 12, 13, 14]))),
    }
    # Sorted by env, then by the differing fields' values: learning rates ascending.
    assert [r["group"] for r in rows] == ["dqn", "dqn / learning_rate=0.0001, hidden_sizes=[64, 64]",
                                          "dqn / learning_rate=0.001, hidden_sizes=[32]",
                                          "dqn / learning_rate=0.001, hidden_sizes=[64, 64]"]
    assert table_row(out, "dqn / learning_rate=0.001, hidden_sizes=[64, 64]")["seeds"] == 4
    # Fields equal in every group (optimizer) and plumbing (device, logdir) stay out of the labels.
    assert "optimizer" not in out and "device" not in out and "logdir" not in out

    # A sweep of one field alone: the labels name only that field.
    sweep = compare.group_runs(compare.load_runs([*map(str, sweep_runs), str(elsewhere)], TAG))
    assert [(g.label, sorted(r.seed for r in g.runs)) for g in sweep] == [
        ("dqn / learning_rate=0.0001", ["1", "2"]), ("dqn / learning_rate=0.001", ["1", "2", "3", "4"])]


def assert_fails_with_one_line(capsys, args, *words):
    with pytest.raises(SystemExit) as exit_info:
        compare.main(args)
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    for word in words:
        assert word in lines[0], lines[0]


def test_user_errors_are_one_line(tmp_path, capsys):
    assert_fails_with_one_line(capsys, [str(tmp_path / "missing")], "missing", "no such folder")
    (tmp_path / "empty").mkdir()
    assert_fails_with_one_line(capsys, [str(tmp_path / "empty")], "no TensorBoard event files")

    run = tmp_path / "logs" / "CartPole-v1__dqn__1__0"
    writer = SummaryWriter(str(run))
    writer.add_scalar("charts/SPS", 100.0, 1)
    writer.close()
    assert_fails_with_one_line(capsys, [str(run), "--tag", "charts/nope"], "charts/nope", "charts/SPS")
    assert_fails_with_one_line(capsys, [str(run), "--tag", "charts/SPS", "--out", str(tmp_path / "x.docx")],
                               ".docx", ".png")
    assert_fails_with_one_line(capsys, [str(run), "--tag", "charts/SPS", "--out", str(tmp_path / "no" / "x.png")],
                               "does not exist")
    assert_fails_with_one_line(capsys, [str(run), "--last", "0"], "--last")


def test_command_line(tmp_path):
    root = Path(__file__).parent.parent
    help_text = subprocess.run([sys.executable, "-m", "studies.compare", "--help"], capture_output=True, text=True,
                               timeout=120, cwd=root)
    assert help_text.returncode == 0 and "--tag" in help_text.stdout and "--last" in help_text.stdout
    missing = subprocess.run([sys.executable, "-m", "studies.compare", str(tmp_path / "nowhere")],
                             capture_output=True, text=True, timeout=120, cwd=root)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip() == f"error: {tmp_path / 'nowhere'}: no such folder"


def test_seeds_are_counted_as_distinct_seeds(tmp_path, capsys):
    logdir = tmp_path / "runs"
    # seed 1 twice (a second run of another budget, say) and seed 2: two seeds, three runs
    for name, value in (("Acrobot-v1__dqn__1__400", -100.0), ("Acrobot-v1__dqn__1__500", -120.0),
                        ("Acrobot-v1__dqn__2__400", -200.0)):
        fake_run(logdir, name, [value] * 6, None)
    capsys.readouterr()
    [row] = compare.main([str(logdir), "--tag", TAG, "--out", str(tmp_path / "c.png"), "--last", "3"])
    assert (row["seeds"], row["runs"]) == (2, 3)
    [line] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Acrobot-v1")]
    assert "2 (3 runs)" in line

"""agents.compare on short runs it makes: its table against the values the runs logged, its figure, its errors."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from agents import compare
from test_tensorboard import logged, short_run  # noqa: F401 (logged is a fixture)

TAG = "charts/episodic_return"
LAST = 5


def expected_numbers(logged, runs: list[Path]) -> dict:
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


def test_table_matches_the_logged_values_and_the_figure_has_both_groups(tmp_path, logged, capsys):
    logdir = tmp_path / "runs"
    rmsprop = [short_run(logdir, "--seed", "1"), short_run(logdir, "--seed", "2")]
    adam = [short_run(logdir, "--seed", "3", "--optimizer", "adam", "--learning-rate", "1e-3")]
    capsys.readouterr()

    figure = tmp_path / "curves.png"
    rows = compare.main([str(logdir), "--tag", TAG, "--out", str(figure), "--last", str(LAST)])
    out = capsys.readouterr().out
    for group, runs in (("dqn / rmsproptf", rmsprop), ("dqn / adam", adam)):
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
    # its colour: labels sorted, so "dqn / adam" gets matplotlib's first colour and rmsproptf the second.
    image = np.asarray(Image.open(figure).convert("RGB"))
    assert image.shape[:2] == (420, 1200)
    left, right = image[:, :600], image[:, 600:]
    for half in (left, right):
        assert pixels_of(half, "#1f77b4") > 200 and pixels_of(half, "#ff7f0e") > 200


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
    help_text = subprocess.run([sys.executable, "-m", "agents.compare", "--help"], capture_output=True, text=True,
                               timeout=120, cwd=root)
    assert help_text.returncode == 0 and "--tag" in help_text.stdout and "--last" in help_text.stdout
    missing = subprocess.run([sys.executable, "-m", "agents.compare", str(tmp_path / "nowhere")],
                             capture_output=True, text=True, timeout=120, cwd=root)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip() == f"error: {tmp_path / 'nowhere'}: no such folder"

"""--track: the run's scalars and config in a Weights & Biases run beside TensorBoard, tested in W&B's offline
mode (nothing leaves the machine): the run's own .wandb log is read back and compared with what it logged."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agents import dqn
from common.events import read_scalars

wandb = pytest.importorskip("wandb", reason="--track's extra (wandb) is not installed")


def wandb_records(path: Path) -> list:
    """The protobuf records of a .wandb file (a LevelDB-style log: 32 KiB blocks of length-prefixed chunks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, records, pending = 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if kind == 0:
            break
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def test_track_logs_the_same_scalars_and_config_to_wandb_offline(tmp_path):
    # as a user runs it, a process of its own: W&B's service writes its log out as the process ends
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    out = subprocess.run([sys.executable, "-m", "agents.dqn", "--env", "CartPole-v1", "--total-timesteps", "800",
                          "--learning-starts", "200", "--eval-interval", "400", "--eval-episodes", "2",
                          "--log-interval", "200", "--track", "--wandb-project", "rlgan-tests", "--logdir",
                          str(tmp_path)], capture_output=True, text=True, env=env, cwd=Path(__file__).parent.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    [folder] = tmp_path.iterdir()
    [log] = folder.glob("wandb/offline-run-*/*.wandb")
    records = wandb_records(log)
    [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.display_name == folder.name and run.project == "rlgan-tests"
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert config["env"] == "CartPole-v1" and config["total_timesteps"] == 800 and config["track"] is True
    rows = [{"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r.history.item}
            for r in records if r.WhichOneof("record_type") == "history"]
    logged = {(row["global_step"], tag): value for row in rows for tag, value in row.items() if "/" in tag}
    # every evaluation TensorBoard has, W&B has at the same step with the same value
    evaluations = read_scalars(folder, "eval/episodic_return")
    assert [s for _, s, _ in evaluations] == [400, 800]
    for _, step, value in evaluations:
        assert logged[(step, "eval/episodic_return")] == pytest.approx(value, rel=1e-6)
    assert any(tag == "losses/td_loss" for _, tag in logged) and any(tag == "charts/SPS" for _, tag in logged)


def test_track_without_wandb_is_one_line(tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name))
                        if name == "wandb" else real_import(name, *a, **k))
    with pytest.raises(SystemExit) as e:
        dqn.main(["--env", "CartPole-v1", "--total-timesteps", "300", "--track", "--logdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--track needs Weights & Biases: pip install -e '.[track]'" in err
    assert not any(tmp_path.iterdir())  # nothing left behind

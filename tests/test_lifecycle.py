"""The run lifecycle every trainer shares: run folders, resume over the checkpoint's config, device
chosen again on resume, --eval, refusals."""
import json
import time

import pytest
import torch

from agents import dqn
from common import checkpoint, lifecycle
from common.errors import UserError
from gans import dcgan

TINY_DQN = ["--env", "CartPole-v1", "--total-timesteps", "400", "--learning-starts", "100", "--buffer-size", "500",
            "--train-frequency", "4", "--gradient-steps", "1", "--eval-interval", "200", "--eval-episodes", "2"]


def test_run_folders_are_unique_within_a_second(tmp_path):
    folders = {lifecycle.new_run_folder(tmp_path, "ALE/Breakout-v5", "dqn", 1) for _ in range(3)}
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
        dqn.train(cfg, loaded)


def test_dcgan_eval_prints_its_score(tmp_path, capsys):
    result = dcgan.main(["--dataset", "ring8", "--steps", "40", "--log-every", "20", "--logdir", str(tmp_path)])
    capsys.readouterr()
    scores = dcgan.main(["--eval", result["final"]])
    out = capsys.readouterr().out
    assert out.startswith("ring8: 2500 samples, ") and "of 8 modes" in out and "% high quality" in out
    assert scores["modes"] == result["modes"] and scores["high_quality"] == result["high_quality"]

"""Checkpoints written by the version before the run state and session (tests/data/v0_checkpoints,
made by commit d6360f5 with the commands in its README) still evaluate to the same scores and
resume to the end of a longer run."""
import shutil
from pathlib import Path

import pytest
import torch

from agents import dqn, ppo, rainbow, sac
from gans import dcgan

DATA = Path(__file__).parent / "data" / "v0_checkpoints"

# What `--eval FILE --eval-episodes 2` printed with the version that wrote them (the README).
EVAL_LINES = {
    "dqn": "CartPole-v1: 2 episodes, score 9.00 +/- 1.00 (min 8.0, max 10.0)",
    "rainbow": "CartPole-v1: 2 episodes, score 10.50 +/- 1.50 (min 9.0, max 12.0)",
    "ppo": "Pendulum-v1: 2 episodes, score -1161.84 +/- 155.41 (min -1317.2, max -1006.4)",
    "sac": "Pendulum-v1: 2 episodes, score -1639.41 +/- 116.95 (min -1756.4, max -1522.5)",
    "dcgan": "ring8: 2500 samples, 0 of 8 modes, 0.0% high quality",
}
MAINS = {"dqn": dqn.main, "rainbow": rainbow.main, "ppo": ppo.main, "sac": sac.main, "dcgan": dcgan.main}
# A budget a little past where each checkpoint stopped.
LONGER = {"dqn": ["--total-timesteps", "2100"], "rainbow": ["--total-timesteps", "2100"],
          "ppo": ["--total-timesteps", "1536"], "sac": ["--total-timesteps", "800"], "dcgan": ["--steps", "320"]}
STEP_KEY = {"dcgan": "step"}


@pytest.mark.parametrize("kind", list(MAINS))
def test_an_earlier_versions_checkpoint_evaluates_to_the_same_score(kind, capsys):
    args = ["--eval", str(DATA / f"{kind}.pt")] + ([] if kind == "dcgan" else ["--eval-episodes", "2"])
    MAINS[kind](args)
    assert capsys.readouterr().out.strip().splitlines()[0] == EVAL_LINES[kind]


@pytest.mark.parametrize("kind", list(MAINS))
def test_an_earlier_versions_checkpoint_resumes_and_keeps_its_keys(kind, tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(DATA / f"{kind}.pt", folder / "checkpoint.pt")
    (folder / "config.json").write_text("{}")  # a run folder, which a resume continues in
    MAINS[kind](["--resume", str(folder / "checkpoint.pt"), *LONGER[kind]])
    old = torch.load(DATA / f"{kind}.pt", weights_only=True)
    new = torch.load(folder / "checkpoint.pt", weights_only=True)  # the whole run state, a saved replay too
    assert sorted(new) == sorted(old)  # the keys a checkpoint holds are those earlier versions wrote
    key = STEP_KEY.get(kind, "global_step")
    assert new[key] == int(LONGER[kind][1]) and new[key] > old[key]

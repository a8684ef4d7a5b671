"""Checkpoints: atomic replacement, safe loading, clear errors."""
import os

import pytest
import torch

from common import checkpoint
from common.errors import UserError


def test_round_trip_and_permissions(tmp_path):
    path = checkpoint.save(tmp_path / "run" / "checkpoint.pt", {"w": torch.arange(3), "step": 7}, kind="dqn")
    loaded = checkpoint.load(path, kind="dqn")
    assert loaded["step"] == 7 and torch.equal(loaded["w"], torch.arange(3))
    assert os.stat(path).st_mode & 0o044  # readable beyond the owner, as torch.save's files are
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint.pt"]  # no temporary left behind


def test_a_failed_save_keeps_the_last_good_checkpoint(tmp_path):
    path = checkpoint.save(tmp_path / "checkpoint.pt", {"step": 1}, kind="dqn")

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        checkpoint.save(path, {"step": 2, "bad": Unpicklable()}, kind="dqn")
    assert checkpoint.load(path, kind="dqn")["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_wrong_kind_and_code_in_pickles_are_refused(tmp_path):
    path = checkpoint.save(tmp_path / "a.pt", {"step": 1}, kind="dcgan")
    with pytest.raises(UserError, match="'dcgan' checkpoint, not 'dqn'"):
        checkpoint.load(path, kind="dqn")
    evil = tmp_path / "evil.pt"
    torch.save({"format": checkpoint.FORMAT, "kind": "dqn", "x": os.getcwd}, evil)  # a callable: code
    with pytest.raises(UserError, match="cannot read checkpoint"):
        checkpoint.load(evil, kind="dqn")

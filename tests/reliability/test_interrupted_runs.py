"""A run killed with SIGKILL at any point resumes to the same weights, bit for bit, as a run never killed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
import torch

from dfine.cli.train import main as train_main

# Runs train.py in a child process that sends itself SIGKILL at one point of epoch 1 (of 2).
_KILLER = """
import os, signal, sys
import torch
torch.set_num_threads(2)
from dfine.cli.train import main
point, argv = sys.argv[1], sys.argv[2:]
def die_on_call(owner, name, nth, counts=lambda *args, **kwargs: True):
    # owner.name becomes a wrapper that sends SIGKILL at the nth call that `counts`
    original, seen = getattr(owner, name), []
    def dying(*args, **kwargs):
        if counts(*args, **kwargs):
            seen.append(1)
            if len(seen) == nth:
                os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)
    setattr(owner, name, dying)
if point == "mid-step":  # the 2nd loss of epoch 1: its 1st optimizer step is done, the epoch is not
    from dfine.losses.criterion import DFINECriterion
    die_on_call(DFINECriterion, "forward", 4)
elif point == "evaluation":  # epoch 1 trained, its evaluation under way
    from dfine.engine.trainer import Trainer
    die_on_call(Trainer, "evaluate", 2)
elif point == "checkpoint-write":  # epoch 1's last.pth written to its temporary file, not yet renamed
    from dfine.engine import checkpoint
    die_on_call(checkpoint.os, "replace", 2, counts=lambda src, dst: str(dst).endswith("last.pth"))
sys.exit(main(argv))
"""


@pytest.fixture(scope="module")
def uninterrupted(tiny_config_file, tmp_path_factory):
    run = tmp_path_factory.mktemp("uninterrupted")
    assert train_main(["-c", str(tiny_config_file), "--seed", "3", "--output-dir", str(run)]) == 0
    return run


def _log(run):
    return [json.loads(line) for line in (run / "log.txt").read_text().splitlines()]


@pytest.mark.parametrize("point", ["mid-step", "evaluation", "checkpoint-write"])
def test_killed_run_resumes_bitwise(point, tiny_config_file, uninterrupted, tmp_path, record_property):
    """SIGKILL in epoch 1, then -r last.pth"""
    run = tmp_path / "run"
    argv = ["-c", str(tiny_config_file), "--seed", "3", "--output-dir", str(run)]
    killed = subprocess.run([sys.executable, "-c", _KILLER, point, *argv], capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert torch.load(run / "last.pth", weights_only=True)["last_epoch"] == 0  # epoch 0's checkpoint survived
    orphans = list(run.glob(".*.tmp"))
    assert bool(orphans) == (point == "checkpoint-write")

    assert train_main([*argv, "-r", str(run / "last.pth")]) == 0
    assert not list(run.glob(".*.tmp"))  # the killed write's temporary is gone
    full, resumed = (torch.load(r / "last.pth", weights_only=True) for r in (uninterrupted, run))
    assert resumed["last_epoch"] == full["last_epoch"] == 1
    for part in ("model", "ema"):
        weights = full[part]["module"] if part == "ema" else full[part]
        again = resumed[part]["module"] if part == "ema" else resumed[part]
        for key, value in weights.items():
            assert torch.equal(value, again[key]), f"{part}.{key}"
    # one record per epoch, the same numbers: a record of the killed epoch is not left twice
    assert [(r["epoch"], r["test_coco_eval_bbox"]) for r in _log(run)] == [
        (r["epoch"], r["test_coco_eval_bbox"]) for r in _log(uninterrupted)
    ]
    record_property("message", f"killed at {point}; resumed bitwise, log.txt one record per epoch")

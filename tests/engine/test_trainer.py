"""End-to-end training on a tiny synthetic set: exact resume, evaluation, errors."""

from __future__ import annotations

import json

import pytest
import torch

from dfine.cli.train import main as train_main


def _weights(path):
    state = torch.load(path, weights_only=True)
    return state["model"], state["ema"]["module"], state


def test_resumed_run_ends_with_identical_weights(tiny_config_file, tmp_path):
    base = ["-c", str(tiny_config_file), "--seed", "3"]
    assert train_main([*base, "--output-dir", str(tmp_path / "full")]) == 0
    assert train_main([*base, "--output-dir", str(tmp_path / "part"), "-u", "epoches=1"]) == 0
    assert train_main([*base, "--output-dir", str(tmp_path / "part"), "-r", str(tmp_path / "part" / "last.pth")]) == 0
    full_model, full_ema, full_state = _weights(tmp_path / "full" / "last.pth")
    part_model, part_ema, part_state = _weights(tmp_path / "part" / "last.pth")
    assert full_state["last_epoch"] == part_state["last_epoch"] == 1
    for key in full_model:
        assert torch.equal(full_model[key], part_model[key]), key
        assert torch.equal(full_ema[key], part_ema[key]), key
    # the official checkpoint layout, plus metadata that travels with every checkpoint
    for entry in ("model", "ema", "optimizer", "lr_scheduler", "lr_warmup_scheduler", "last_epoch", "date"):
        assert entry in full_state
    assert full_state["dfine"]["class_names"] == ["circle", "square", "triangle", "star", "cross"]
    log = [json.loads(line) for line in (tmp_path / "full" / "log.txt").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0, 1] and len(log[-1]["test_coco_eval_bbox"]) == 12
    assert all(r["time_train_s"] > 0 and r["time_eval_s"] > 0 for r in log)  # where each epoch's time went
    for name in ("best_stg1.pth", "best.pth", "checkpoint0000.pth", "config.yml", "summary.json"):
        assert (tmp_path / "full" / name).exists(), name
    best = torch.load(tmp_path / "full" / "best.pth", weights_only=True)
    assert "optimizer" not in best and "model" in best  # weights-only deployment file


def test_test_only_evaluates_a_checkpoint(tiny_config_file, tmp_path, capsys):
    run = tmp_path / "run"
    assert train_main(["-c", str(tiny_config_file), "-u", "epoches=1", "--output-dir", str(run)]) == 0
    capsys.readouterr()
    out = tmp_path / "eval"
    assert train_main(["-c", str(tiny_config_file), "-r", str(run / "last.pth"), "--test-only",
                       "--output-dir", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" in printed
    for name in ("predictions.json", "metrics.json", "per_class_ap.csv", "pr_curves.png", "confusion_matrix.png"):
        assert (out / "eval" / name).exists(), name
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert len(metrics["stats"]) == 12 and len(metrics["confusion_matrix"]["counts"]) == 6


def test_test_only_needs_a_checkpoint(tiny_config_file, capsys):
    assert train_main(["-c", str(tiny_config_file), "--test-only"]) == 2
    assert "needs the checkpoint" in capsys.readouterr().err


def test_eval_holds_the_best_report_and_val_writes_beside_its_checkpoint(tiny_config_file, tmp_path, capsys):
    run = tmp_path / "run"
    assert train_main(["-c", str(tiny_config_file), "--output-dir", str(run)]) == 0
    records = [json.loads(line) for line in (run / "log.txt").read_text().splitlines()]
    aps = [record["test_coco_eval_bbox"][0] for record in records]
    best_epoch, best_of_stage = -1, {}
    for epoch, ap in enumerate(aps):  # best.pth: the best of the current stage (stage 2 from epoch 1 here)
        if ap > best_of_stage.get(epoch >= 1, -1.0):
            best_epoch, best_of_stage[epoch >= 1] = epoch, ap
    best = json.loads((run / "eval" / "metrics.json").read_text())["stats"]
    last = json.loads((run / "eval" / "last" / "metrics.json").read_text())["stats"]
    assert best["AP"] == pytest.approx(aps[best_epoch]) and last["AP"] == pytest.approx(aps[-1])
    (run / "eval" / "metrics.json").unlink()
    capsys.readouterr()
    assert train_main(["-c", str(tiny_config_file), "-r", str(run / "best.pth"), "--test-only"]) == 0
    assert f"evaluation files: {run / 'eval'}" in capsys.readouterr().out  # beside the checkpoint, not output_dir
    assert (run / "eval" / "metrics.json").is_file()


def test_persistent_workers_resume_to_identical_weights(tiny_config_file, tmp_path, monkeypatch):
    """CUDA runs keep their loader workers across epochs; forced here on the CPU, the resume stays exact."""
    import dfine.engine.setup as setup

    monkeypatch.setattr(setup, "_persistent_workers", lambda device, num_workers: num_workers > 0)
    base, workers = ["-c", str(tiny_config_file), "--seed", "5"], "train_dataloader.num_workers=2"
    assert train_main([*base, "--output-dir", str(tmp_path / "full"), "-u", workers]) == 0
    assert train_main([*base, "--output-dir", str(tmp_path / "part"), "-u", workers, "epoches=1"]) == 0
    resume = ["-r", str(tmp_path / "part" / "last.pth"), "-u", workers]
    assert train_main([*base, "--output-dir", str(tmp_path / "part"), *resume]) == 0
    full_model, _, _ = _weights(tmp_path / "full" / "last.pth")
    part_model, _, _ = _weights(tmp_path / "part" / "last.pth")
    assert all(torch.equal(full_model[key], part_model[key]) for key in full_model)

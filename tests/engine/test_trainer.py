"""End-to-end training on a tiny synthetic set: exact resume, evaluation, errors."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch
import yaml

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


def test_resume_from_another_size_is_refused(tiny_config_file, tmp_path, capsys):
    import dfine

    bad = tmp_path / "s.pth"
    torch.save({"model": dfine.build_model("s").state_dict(), "last_epoch": 0}, bad)
    assert train_main(["-c", str(tiny_config_file), "-r", str(bad), "--output-dir", str(tmp_path / "x")]) == 2
    assert "does not match this config" in capsys.readouterr().err
    # --test-only: the same checkpoint is refused with the differences and advice for this command
    assert train_main(["-c", str(tiny_config_file), "-r", str(bad), "--test-only", "--output-dir",
                       str(tmp_path / "y")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "shape mismatch" in err and "looks like D-FINE-S" in err
    assert "with the config it was trained with (-c)" in err and "strict=False" not in err


def test_resume_from_a_weights_only_file_is_refused(tiny_config_file, tmp_path, capsys):
    from dfine.config.schema import load_train_config
    from dfine.model.dfine import DFINE

    weights_only = tmp_path / "best.pth"  # the layout of a run's best.pth: weights, epoch and metadata
    model = DFINE.from_config(load_train_config(tiny_config_file).model)
    torch.save({"model": model.state_dict(), "last_epoch": 3, "dfine": {}}, weights_only)
    assert train_main(["-c", str(tiny_config_file), "-r", str(weights_only), "--output-dir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert f"{weights_only}: this is a weights-only file" in err and "use -t to fine-tune from it" in err
    assert not (tmp_path / "x" / "last.pth").exists()  # nothing trained


def test_resume_from_a_missing_last_pth_names_the_newest_resumable_file(tiny_config_file, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "best_stg1.pth").write_bytes(b"x")
    newest = run / "checkpoint0003.pth"
    newest.write_bytes(b"x")
    os.utime(run / "best_stg1.pth", (1, 1))
    assert train_main(["-c", str(tiny_config_file), "-r", str(run / "last.pth"), "--output-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'last.pth'} does not exist" in err and f"-r {newest}" in err


@pytest.mark.parametrize(
    ("images", "annotations", "says"), [(True, False, "3 images but no annotations"), (False, False, "no images")]
)
def test_an_empty_split_is_refused_before_training(tiny_data, tmp_path, capsys, images, annotations, says):
    from tests.engine.conftest import tiny_config

    data = json.loads((tiny_data / "annotations" / "instances_val.json").read_text())
    data["annotations"] = data["annotations"] if annotations else []
    data["images"] = data["images"] if images else []
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps(data))
    config = tiny_config(tiny_data, tmp_path / "run")
    config["train_dataloader"]["dataset"]["ann_file"] = str(empty)
    path = tmp_path / "run.yml"
    path.write_text(yaml.safe_dump(config))
    assert train_main(["-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{empty}: train_dataloader.dataset.ann_file has {says}" in err
    assert not (tmp_path / "run" / "last.pth").exists()


def _assert_one_line(capsys, pattern: str) -> None:
    err = capsys.readouterr().err
    errors = [part.strip() for part in re.split(r"[\r\n]", err) if "error:" in part]  # progress bars use \r
    assert len(errors) == 1 and "Traceback" not in err and re.search(pattern, errors[0]), err


def test_non_finite_loss_names_step_and_checkpoint(tiny_config_file, tmp_path, monkeypatch, capsys):
    from dfine.losses.criterion import DFINECriterion

    original = DFINECriterion.forward

    def poisoned(self, outputs, targets, **kwargs):
        losses = original(self, outputs, targets, **kwargs)
        losses["loss_vfl"] = losses["loss_vfl"] * float("nan")
        return losses

    monkeypatch.setattr(DFINECriterion, "forward", poisoned)
    monkeypatch.setattr("dfine.losses.criterion.torch.nan_to_num", lambda x, nan=0.0: x)
    assert train_main(["-c", str(tiny_config_file), "--output-dir", str(tmp_path / "nan")]) == 1
    _assert_one_line(capsys, r"epoch 0, step 0.*no checkpoint was written yet")


def test_nan_predictions_stop_the_run(tiny_config_file, tmp_path, monkeypatch, capsys):
    from dfine.model.decoder import DFINETransformer

    original = DFINETransformer.forward

    def poisoned(self, feats, targets=None):
        out = original(self, feats, targets)
        out["pred_boxes"] = out["pred_boxes"] * float("nan")
        return out

    monkeypatch.setattr(DFINETransformer, "forward", poisoned)
    assert train_main(["-c", str(tiny_config_file), "--output-dir", str(tmp_path / "nan")]) == 1
    _assert_one_line(capsys, r"predictions became NaN/inf at epoch 0, step 0")


def test_an_exploding_loss_stops_with_one_line(tiny_config_file, tmp_path, monkeypatch, capsys):
    from dfine.engine import trainer as trainer_module
    from dfine.losses.criterion import DFINECriterion

    monkeypatch.setattr(trainer_module, "EXPLOSION_MIN_STEPS", 2)
    original, calls = DFINECriterion.forward, []

    def exploding(self, outputs, targets, **kwargs):
        losses = original(self, outputs, targets, **kwargs)
        calls.append(1)
        if len(calls) == 3:  # finite, but ~1e8 times the earlier steps
            losses["loss_vfl"] = losses["loss_vfl"] * 0 + 1e9
        return losses

    monkeypatch.setattr(DFINECriterion, "forward", exploding)
    assert train_main(["-c", str(tiny_config_file), "--output-dir", str(tmp_path / "boom")]) == 1
    _assert_one_line(capsys, r"loss exploded to .* at epoch \d+, step \d+")


def test_a_full_disk_while_saving_says_what_is_intact(tiny_config_file, tmp_path, monkeypatch, capsys):
    import errno

    from dfine.engine import trainer as trainer_module

    def fill_up(obj, path):
        if path.name == "last.pth" and path.exists():  # epoch 0's checkpoints land, epoch 1's hit a full disk
            raise OSError(errno.ENOSPC, "No space left on device")
        torch.save(obj, path)
        return path

    monkeypatch.setattr(trainer_module, "save_atomic", fill_up)
    assert train_main(["-c", str(tiny_config_file), "--output-dir", str(tmp_path / "full")]) == 1
    intact = r"the previous checkpoint .*last\.pth is intact"
    _assert_one_line(
        capsys, rf"no space left on the device writing .*last\.pth; {intact}; .*resume with -r .*last\.pth"
    )
    assert torch.load(tmp_path / "full" / "last.pth", weights_only=True)["last_epoch"] == 0

"""Faults during a run end with one line, exit status 1, and the last good checkpoint intact and named."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import torch

from dfine.cli.train import main as train_main


def _assert_one_line(capsys, record_property, pattern: str) -> None:
    err = capsys.readouterr().err
    errors = [part.strip() for part in re.split(r"[\r\n]", err) if "error:" in part]  # progress bars use \r
    assert len(errors) == 1 and "Traceback" not in err and re.search(pattern, errors[0]), err
    record_property("message", errors[0])


def test_non_finite_loss_names_step_and_checkpoint(tiny_config_file, tmp_path, monkeypatch, capsys, record_property):
    """a NaN loss (injected)"""
    from dfine.losses.criterion import DFINECriterion

    original = DFINECriterion.forward

    def poisoned(self, outputs, targets, **kwargs):
        losses = original(self, outputs, targets, **kwargs)
        losses["loss_vfl"] = losses["loss_vfl"] * float("nan")
        return losses

    monkeypatch.setattr(DFINECriterion, "forward", poisoned)
    monkeypatch.setattr("dfine.losses.criterion.torch.nan_to_num", lambda x, nan=0.0: x)
    assert train_main(["-c", str(tiny_config_file), "--output-dir", str(tmp_path / "nan")]) == 1
    _assert_one_line(capsys, record_property, r"epoch 0, step 0.*no checkpoint was written yet")


def test_nan_predictions_stop_the_run(tiny_config_file, tmp_path, monkeypatch, capsys, record_property):
    """NaN predictions (injected)"""
    from dfine.model.decoder import DFINETransformer

    original = DFINETransformer.forward

    def poisoned(self, feats, targets=None):
        out = original(self, feats, targets)
        return dataclasses.replace(out, boxes=out.boxes * float("nan"))

    monkeypatch.setattr(DFINETransformer, "forward", poisoned)
    assert train_main(["-c", str(tiny_config_file), "--output-dir", str(tmp_path / "nan")]) == 1
    _assert_one_line(capsys, record_property, r"predictions became NaN/inf at epoch 0, step 0")


def test_an_exploding_loss_stops_with_one_line(tiny_config_file, tmp_path, monkeypatch, capsys, record_property):
    """a finite loss 1e8x its median (injected)"""
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
    _assert_one_line(capsys, record_property, r"loss exploded to .* at epoch \d+, step \d+")


def test_a_full_disk_while_saving_says_what_is_intact(tiny_config_file, tmp_path, monkeypatch, capsys, record_property):
    """disk full while writing last.pth (injected ENOSPC)"""
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
    wanted = rf"no space left on the device writing .*last\.pth; {intact}; free space and resume with -r .*last\.pth"
    _assert_one_line(capsys, record_property, wanted)
    assert torch.load(tmp_path / "full" / "last.pth", weights_only=True)["last_epoch"] == 0


def test_a_real_file_size_limit_while_saving(tiny_config_file, tmp_path, record_property):
    """the OS refuses the checkpoint write (RLIMIT_FSIZE, a real EFBIG, subprocess)"""
    limit = 2_000_000  # config.yml and log.txt fit, a checkpoint (~tens of MB) does not
    script = (
        "import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
        "import torch; torch.set_num_threads(2); from dfine.cli.train import main; sys.exit(main(sys.argv[1:]))"
    )
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", script, "-c", str(tiny_config_file), "--output-dir", str(run)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    errors = [part.strip() for part in re.split(r"[\r\n]", done.stderr) if "error:" in part]
    assert done.returncode == 1 and "Traceback" not in done.stderr and len(errors) == 1, done.stderr[-2000:]
    assert re.search(r"file-size limit was reached writing .*\.pth; no checkpoint was written yet; raise the limit",
                     errors[0]), errors[0]  # fmt: skip
    assert not list(run.glob(".*.tmp")) and not (run / "last.pth").exists()
    record_property("message", errors[0])

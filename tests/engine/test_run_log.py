"""What a run says (:mod:`dfine.engine.run_log`): start, tables, best checkpoints, stage 2, resume, end."""

from __future__ import annotations

import logging
import sys

from dfine.cli.train import main
from dfine.engine.eval_report import MATPLOTLIB_MISSING
from dfine.engine.run_log import RUN_LOG, metrics_table, run_logging


def test_a_run_says_what_happens_and_logs_to_run_log(tiny_config_file, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["-c", str(tiny_config_file), "--seed", "0"]) == 0
    said = capsys.readouterr().out
    assert "D-FINE training on cpu (x1):" in said and "2 epochs of batch 3" in said and str(run) in said
    assert "stage 2 from epoch 2/2" in said  # the tiny config stops augmentation after epoch 1
    assert "AP50" in said and "circle" in said  # the compact table, with per-class AP
    assert "the best so far" in said or "no evaluation" in said
    assert said.strip().splitlines()[-1].startswith("done: 2 epochs in")
    log = (run / RUN_LOG).read_text()
    assert "Average Precision  (AP) @[ IoU=0.50:0.95" in log and "stage 2 from epoch 2/2" in log
    assert logging.getLogger("dfine").handlers == []  # nothing left attached after the run
    assert (run / "results.png").is_file() and f"curves {run / 'results.png'}" in said

    assert main(["-c", str(tiny_config_file), "-r", str(run / "last.pth"), "-u", "epoches=3"]) == 0
    said = capsys.readouterr().out
    assert f"resumed from {run / 'last.pth'}: continuing with epoch 3/3" in said


def test_an_evaluation_only_run_writes_no_run_folder(tmp_path):
    folder = tmp_path / "never"
    with run_logging(folder):
        logging.getLogger("dfine.test").info("said before the run folder exists")
    assert not folder.exists()


def test_metrics_table_is_compact():
    stats = {"AP": 0.5, "AP50": 0.75, "AP75": 0.5, "APs": -1.0, "APm": 0.25, "APl": 0.125, "AR1": 0.1}
    per_class = {f"class{k}": k / 100 for k in range(35)}
    per_class["class3"] = -1.0
    table = metrics_table(stats, per_class).splitlines()
    assert table[0] == "AP 0.500  AP50 0.750  AP75 0.500  APs -  APm 0.250  APl 0.125"
    assert len(table) == 1 + 30 // 4 + 1 + 1 and " class3 -" in table[1]
    assert table[-1] == "... 5 more classes (mean AP 0.320)"


def test_without_matplotlib_the_run_says_once_what_it_skips(tiny_config_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["-c", str(tiny_config_file), "--output-dir", str(tmp_path / "bare")]) == 0
    said = capsys.readouterr().out
    assert said.count(MATPLOTLIB_MISSING) == 1 and not (tmp_path / "bare" / "results.png").exists()

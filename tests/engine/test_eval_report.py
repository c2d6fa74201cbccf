"""Confusion matrix and the saved evaluation report."""

from __future__ import annotations

import sys

import numpy as np
from PIL import Image

from dfine.engine.eval_report import MATPLOTLIB_MISSING, confusion_matrix, save_eval_report, save_results_plot
from dfine.engine.evaluate import CocoEvaluator


def _gt():
    return {
        "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
        "categories": [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 30, 30], "area": 900, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [60, 60, 30, 30], "area": 900, "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 7, "bbox": [50, 50, 20, 40], "area": 800, "iscrowd": 0},
        ],
    }


def test_confusion_matrix_counts_hits_confusions_misses_and_false_alarms():
    detections = [
        {"image_id": 1, "category_id": 3, "bbox": [10, 10, 30, 30], "score": 0.9},  # a -> a
        {"image_id": 1, "category_id": 3, "bbox": [60, 60, 30, 30], "score": 0.8},  # b -> a
        {"image_id": 2, "category_id": 7, "bbox": [0, 0, 10, 10], "score": 0.7},  # background -> b
        {"image_id": 2, "category_id": 3, "bbox": [50, 50, 20, 40], "score": 0.1},  # below the score cut
    ]
    matrix = confusion_matrix(detections, _gt(), [3, 7])
    expected = np.array([[1, 0, 0], [1, 0, 1], [0, 1, 0]])
    assert (matrix == expected).all()


def test_report_files(tmp_path):
    import torch

    evaluator = CocoEvaluator(_gt(), label_to_category=[3, 7], class_names=["a", "b"])
    evaluator.update([1, 2], [
        {"boxes": torch.tensor([[10.0, 10, 40, 40], [60, 60, 90, 90]]), "scores": torch.tensor([0.9, 0.8]),
         "labels": torch.tensor([0, 1])},
        {"boxes": torch.tensor([[50.0, 50, 70, 90]]), "scores": torch.tensor([0.8]), "labels": torch.tensor([1])},
    ])  # fmt: skip
    result = evaluator.compute(verbose=False)
    assert result.stats["AP"] == 1.0 and result.per_class_ap == {"a": 1.0, "b": 1.0}
    assert len(result.summary.splitlines()) == 12
    matrix = confusion_matrix(evaluator.detections, _gt(), [3, 7])
    files = save_eval_report(result, tmp_path, ["a", "b"], matrix)
    assert {f.name for f in files} == {
        "metrics.json", "per_class_ap.csv", "pr_curves.png", "confusion_matrix.png", "confusion_matrix_normalized.png"
    }  # fmt: skip
    assert (tmp_path / "per_class_ap.csv").read_text().splitlines()[1] == "a,1.0"


def _records(epochs: int) -> list[dict]:
    return [{"epoch": e, "train_loss": 30.0 - e, "test_coco_eval_bbox": [0.1 * e, 0.2 * e] + [0.0] * 10}
            for e in range(epochs)]  # fmt: skip


def test_results_plot_and_readable_sizes(tmp_path):
    path = save_results_plot(_records(3), tmp_path / "results.png")
    with Image.open(path) as image:
        assert image.size == (1100, 440)  # 10 x 4 inches at 110 dpi: loss beside AP
    result_files = save_eval_report(
        _fake_result(40), tmp_path / "many", [f"class{k}" for k in range(40)], np.ones((41, 41), dtype=int)
    )
    with (
        Image.open(tmp_path / "many" / "confusion_matrix_normalized.png") as big,
        Image.open(tmp_path / "many" / "pr_curves.png"),
    ):
        assert big.size[0] > 1500  # 41 labels: the figure grows with the class count
    assert len(result_files) == 5


def _fake_result(classes: int):
    from dfine.engine.evaluate import EvalResult

    precision = np.full((10, 101, classes, 4, 3), 0.5)
    return EvalResult(stats={"AP": 0.5}, per_class_ap={f"class{k}": 0.5 for k in range(classes)}, precision=precision)


def test_without_matplotlib_the_files_that_need_it_are_skipped(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    files = save_eval_report(_fake_result(2), tmp_path, ["a", "b"], np.eye(3, dtype=int))
    assert {f.name for f in files} == {"metrics.json", "per_class_ap.csv"}
    assert save_results_plot(_records(2), tmp_path / "results.png") is None
    assert "pip install dfine[train]" in MATPLOTLIB_MISSING

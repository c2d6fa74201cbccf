"""Evaluation artefacts saved with a run: metrics JSON, per-class AP table, confusion matrix and
precision-recall curves (as PNG when matplotlib is installed)."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou

from .evaluate import EvalResult

__all__ = ["confusion_matrix", "save_eval_report"]


def _xywh_to_xyxy(boxes: list[list[float]]) -> torch.Tensor:
    if not boxes:
        return torch.zeros(0, 4)
    b = torch.tensor(boxes, dtype=torch.float64)
    return torch.cat([b[:, :2], b[:, :2] + b[:, 2:]], dim=1)


def confusion_matrix(
    detections: list[dict[str, Any]],
    ground_truth: dict[str, Any],
    category_ids: list[int],
    iou_threshold: float = 0.5,
    score_threshold: float = 0.25,
) -> np.ndarray:
    """``[C + 1, C + 1]`` counts: rows are true classes, columns predicted classes, the last row and
    column is background (missed objects / false detections).

    Detections (COCO results, ``score >= score_threshold``) are matched greedily by score to the
    unmatched non-crowd ground-truth box of highest IoU (>= ``iou_threshold``) of any class.
    """
    index = {c: i for i, c in enumerate(category_ids)}
    background = len(category_ids)
    matrix = np.zeros((background + 1, background + 1), dtype=np.int64)
    gts = defaultdict(list)
    for ann in ground_truth.get("annotations", []):
        if not ann.get("iscrowd", 0) and ann["category_id"] in index:
            gts[ann["image_id"]].append(ann)
    dets = defaultdict(list)
    for det in detections:
        if det["score"] >= score_threshold and det["category_id"] in index:
            dets[det["image_id"]].append(det)
    for image_id in {img["id"] for img in ground_truth.get("images", [])} | set(dets):
        image_gts = gts.get(image_id, [])
        image_dets = sorted(dets.get(image_id, []), key=lambda d: -d["score"])
        matched = [False] * len(image_gts)
        ious = box_iou(_xywh_to_xyxy([d["bbox"] for d in image_dets]), _xywh_to_xyxy([g["bbox"] for g in image_gts]))
        for i, det in enumerate(image_dets):
            best, best_iou = -1, iou_threshold
            for j in range(len(image_gts)):
                if not matched[j] and ious[i, j] >= best_iou:
                    best, best_iou = j, float(ious[i, j])
            predicted = index[det["category_id"]]
            if best < 0:
                matrix[background, predicted] += 1
            else:
                matched[best] = True
                matrix[index[image_gts[best]["category_id"]], predicted] += 1
        for j, gt in enumerate(image_gts):
            if not matched[j]:
                matrix[index[gt["category_id"]], background] += 1
    return matrix


def save_eval_report(
    result: EvalResult,
    out_dir: str | Path,
    class_names: list[str],
    confusion: np.ndarray | None = None,
) -> list[Path]:
    """Write ``metrics.json``, ``per_class_ap.csv`` and, with matplotlib, ``pr_curves.png`` and
    ``confusion_matrix.png`` into ``out_dir``; returns the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    metrics = {"stats": result.stats, "per_class_ap": result.per_class_ap}
    if confusion is not None:
        metrics["confusion_matrix"] = {"labels": [*class_names, "background"], "counts": confusion.tolist()}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    written.append(out / "metrics.json")
    with (out / "per_class_ap.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["class", "AP"])
        writer.writerows(result.per_class_ap.items())
    written.append(out / "per_class_ap.csv")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return written
    if result.precision is not None and result.precision.ndim == 5:
        fig, ax = plt.subplots(figsize=(6, 5))
        recall = np.linspace(0, 1, result.precision.shape[1])
        for k, name in enumerate(class_names[: result.precision.shape[2]]):
            curve = result.precision[0, :, k, 0, -1]  # IoU 0.5, area all, maxDets 100
            if (curve > -1).any():
                ax.plot(recall, np.clip(curve, 0, 1), label=name)
        ax.set(xlabel="recall", ylabel="precision", title="precision-recall @ IoU 0.5", xlim=(0, 1), ylim=(0, 1.02))
        if len(class_names) <= 20:
            ax.legend(fontsize=7, loc="lower left")
        fig.tight_layout()
        fig.savefig(out / "pr_curves.png", dpi=100)
        plt.close(fig)
        written.append(out / "pr_curves.png")
    if confusion is not None and len(class_names) <= 100:
        labels = [*class_names, "background"]
        fig, ax = plt.subplots(figsize=(1.5 + 0.4 * len(labels), 1.2 + 0.4 * len(labels)))
        ax.imshow(confusion, cmap="Blues")
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set(xlabel="predicted", ylabel="true", title="confusion matrix (IoU 0.5, score 0.25)")
        if len(labels) <= 30:
            for (i, j), value in np.ndenumerate(confusion):
                if value:
                    ax.text(j, i, str(value), ha="center", va="center", fontsize=6)
        fig.tight_layout()
        fig.savefig(out / "confusion_matrix.png", dpi=100)
        plt.close(fig)
        written.append(out / "confusion_matrix.png")
    return written

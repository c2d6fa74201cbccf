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

__all__ = [
    "MATPLOTLIB_MISSING",
    "confusion_matrix",
    "plotting_available",
    "save_eval_report",
    "save_results_plot",
]


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
    """Write ``metrics.json``, ``per_class_ap.csv`` and, with matplotlib, ``pr_curves.png``,
    ``confusion_matrix.png`` and ``confusion_matrix_normalized.png`` into ``out_dir``; returns the files written."""
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
    plt = _pyplot()
    if plt is None:
        return written
    if result.precision is not None and result.precision.ndim == 5:
        written.append(_pr_curves(plt, result.precision, class_names, out / "pr_curves.png"))
    if confusion is not None and len(class_names) <= 100:
        written.append(_confusion_plot(plt, confusion, class_names, False, out / "confusion_matrix.png"))
        written.append(_confusion_plot(plt, confusion, class_names, True, out / "confusion_matrix_normalized.png"))
    return written


MATPLOTLIB_MISSING = (
    "matplotlib is not installed: the run skips pr_curves.png, confusion_matrix*.png and results.png (metrics.json, "
    "per_class_ap.csv and log.txt are written); pip install dfine[train] adds them"
)


def plotting_available() -> bool:
    return _pyplot() is not None


def _pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend, or None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _pr_curves(plt, precision: np.ndarray, class_names: list[str], path: Path) -> Path:
    """Precision-recall at IoU 0.5 per class (AP50 in the legend) and over all classes (their mean, bold)."""
    fig, ax = plt.subplots(figsize=(7, 5.5))
    recall = np.linspace(0, 1, precision.shape[1])
    curves = precision[0, :, :, 0, -1]  # [recall, class] at IoU 0.5, area all, maxDets 100; -1: no ground truth
    present = [k for k in range(min(len(class_names), curves.shape[1])) if (curves[:, k] > -1).any()]
    for k in present:
        curve = np.clip(curves[:, k], 0, 1)
        ax.plot(recall, curve, linewidth=1, label=f"{class_names[k]} {curve.mean():.3f}")
    if present:
        mean = np.clip(curves[:, present], 0, 1).mean(axis=1)
        ax.plot(recall, mean, color="black", linewidth=3, label=f"all classes {mean.mean():.3f}")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title="precision-recall at IoU 0.5 (legend: AP50)")  # fmt: skip
    if len(present) <= 25:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    else:
        ax.legend(handles=ax.get_lines()[-1:], fontsize=8, loc="lower left")  # the all-class curve only
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _confusion_plot(plt, confusion: np.ndarray, class_names: list[str], normalized: bool, path: Path) -> Path:
    """The confusion matrix, counts or each true class's row as fractions, sized to the class count."""
    labels = [*class_names, "background"]
    values = confusion.astype(float)
    if normalized:
        totals = values.sum(axis=1, keepdims=True)
        values = np.divide(values, totals, out=np.zeros_like(values), where=totals > 0)
    side = max(5.0, 1.5 + 0.35 * len(labels))
    fig, ax = plt.subplots(figsize=(side + 1, side))
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalized else None)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    what = "each true class's row as fractions" if normalized else "counts"
    ax.set(xlabel="predicted", ylabel="true", title=f"confusion matrix, {what}\n(IoU 0.5, score 0.25)")
    if len(labels) <= 30:
        for (i, j), value in np.ndenumerate(values):
            if value:
                text = f"{value:.2f}" if normalized else str(int(value))
                ax.text(j, i, text, ha="center", va="center", fontsize=6,
                        color="white" if value > 0.6 * values.max() else "black")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_results_plot(records: list[dict], path: str | Path) -> Path | None:
    """``results.png``: the training loss and the validation AP / AP50 per epoch (from ``log.txt`` records);
    None without matplotlib."""
    plt = _pyplot()
    if plt is None or not records:
        return None
    epochs = [record["epoch"] + 1 for record in records]
    fig, (loss_ax, ap_ax) = plt.subplots(1, 2, figsize=(10, 4))
    loss_ax.plot(epochs, [record.get("train_loss", np.nan) for record in records], marker="o")
    loss_ax.set(xlabel="epoch", ylabel="loss (sum of terms)", title="training loss")
    evaluated = [(e, r["test_coco_eval_bbox"]) for e, r in zip(epochs, records) if "test_coco_eval_bbox" in r]
    if evaluated:
        ap_ax.plot([e for e, _ in evaluated], [s[0] for _, s in evaluated], marker="o", label="AP")
        ap_ax.plot([e for e, _ in evaluated], [s[1] for _, s in evaluated], marker="o", label="AP50")
        ap_ax.legend()
    ap_ax.set(xlabel="epoch", ylabel="COCO AP", title="validation", ylim=(0, None))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)

"""COCO-style evaluation with faster-coco-eval: AP/AR summary, per-class AP, results JSON."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .distributed import all_gather_objects, is_main_process

__all__ = ["CocoEvaluator", "EvalResult", "STAT_NAMES"]

STAT_NAMES = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)  # fmt: skip


@dataclass
class EvalResult:
    """Detection metrics of one evaluation.

    Attributes:
        stats: the 12 COCO numbers by name (``AP``, ``AP50``, ... ``ARl``); -1 where undefined.
        per_class_ap: AP@[.5:.95] per category name (-1 for classes without ground truth).
        summary: the 12-line text summary, as pycocotools prints it.
        precision: the accumulated precision array ``[T, R, K, A, M]`` (for PR curves), or None.
    """

    stats: dict[str, float]
    per_class_ap: dict[str, float] = field(default_factory=dict)
    summary: str = ""
    precision: np.ndarray | None = None

    def as_list(self) -> list[float]:
        return [self.stats[name] for name in STAT_NAMES]


class CocoEvaluator:
    """Collects detections and scores them against COCO-format ground truth.

    Args:
        ground_truth: a COCO annotation dict or the path of its JSON file.
        label_to_category: model label ``i`` -> dataset category id (identity when None).
        class_names: names per model label, for the per-class table.
    """

    def __init__(
        self,
        ground_truth: dict | str | Path,
        label_to_category: list[int] | None = None,
        class_names: list[str] | None = None,
    ) -> None:
        if isinstance(ground_truth, str | Path):
            ground_truth = json.loads(Path(ground_truth).read_text())
        self.ground_truth = ground_truth
        self.label_to_category = list(label_to_category) if label_to_category is not None else None
        self.class_names = list(class_names) if class_names is not None else None
        self.detections: list[dict[str, Any]] = []
        self.image_ids: list[int] = []  # images seen, in order (also those without detections)

    def reset(self) -> None:
        self.detections = []
        self.image_ids = []

    def update(self, image_ids: list[int], results: list[dict[str, torch.Tensor]]) -> None:
        """Add per-image post-processor results (``boxes`` xyxy pixels, ``scores``, ``labels``).

        An image seen before is skipped: a distributed sampler repeats images to even out the ranks.
        """
        seen = set(self.image_ids)
        for image_id, result in zip(image_ids, results, strict=True):
            if int(image_id) in seen:
                continue
            seen.add(int(image_id))
            self.image_ids.append(int(image_id))
            boxes = result["boxes"].detach().float().cpu()
            xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
            labels = result["labels"].detach().cpu().tolist()
            scores = result["scores"].detach().float().cpu().tolist()
            for box, label, score in zip(xywh, labels, scores):
                category = self.label_to_category[label] if self.label_to_category else int(label)
                self.detections.append(
                    {"image_id": int(image_id), "category_id": int(category), "bbox": box, "score": score}
                )

    def gather(self) -> None:
        """Collect the detections of all ranks (every rank ends with the full list).

        Each image counts once: ``DistributedSampler`` pads the last round with images another rank
        also scores, and those second copies are dropped (the lowest rank's copy is kept).
        """
        merged, claimed = [], set()
        for image_ids, detections in all_gather_objects((self.image_ids, self.detections)):
            mine = set(image_ids) - claimed
            merged.extend(d for d in detections if d["image_id"] in mine)
            claimed |= mine
        self.detections = merged
        self.image_ids = sorted(claimed)

    def write_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.detections))
        return path

    def compute(self, verbose: bool = True) -> EvalResult:
        """COCO bbox metrics of the collected detections; prints the summary when ``verbose``."""
        from faster_coco_eval import COCO, COCOeval_faster

        gt = COCO(self.ground_truth)
        image_ids = sorted(img["id"] for img in self.ground_truth.get("images", []))
        if not self.detections or not gt.getAnnIds():
            stats = dict.fromkeys(STAT_NAMES, 0.0 if self.detections or not gt.getAnnIds() else -1.0)
            return EvalResult(stats=stats, summary="no detections" if not self.detections else "no ground truth")
        dt = gt.loadRes(self.detections)
        lines: list[str] = []
        coco_eval = COCOeval_faster(gt, dt, iouType="bbox", print_function=lines.append)
        coco_eval.params.imgIds = image_ids
        with contextlib.redirect_stdout(io.StringIO()):
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        # the 12 standard lines (faster-coco-eval adds AR@.5 / AR@.75 after them, and progress lines)
        summary = "\n".join([str(line) for line in lines if str(line).lstrip().startswith("Average")][:12])
        stats = {name: float(v) for name, v in zip(STAT_NAMES, coco_eval.stats[: len(STAT_NAMES)])}
        precision = np.asarray(coco_eval.eval["precision"]) if "precision" in coco_eval.eval else None
        result = EvalResult(stats=stats, summary=summary, precision=precision)
        result.per_class_ap = self._per_class_ap(coco_eval, precision)
        if verbose and is_main_process():
            print(summary)
        return result

    def _per_class_ap(self, coco_eval, precision: np.ndarray | None) -> dict[str, float]:
        if precision is None or precision.ndim != 5:
            return {}
        category_ids = list(coco_eval.params.catIds)
        id_to_name = {c["id"]: c.get("name", str(c["id"])) for c in self.ground_truth.get("categories", [])}
        table = {}
        for k, category in enumerate(category_ids):
            values = precision[:, :, k, 0, -1]  # all IoUs, all recalls, area "all", maxDets 100
            values = values[values > -1]
            table[id_to_name.get(category, str(category))] = float(values.mean()) if values.size else -1.0
        return table

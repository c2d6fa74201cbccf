"""Compare two sets of detections (e.g. onnxruntime vs PyTorch), allowing for top-K order ties.

Two runtimes compute the same graph with different kernels, so scores differ in the last bits
(~1e-6). Where two (query, class) pairs score within that of each other they may swap places, and
at the K-th place one runtime may keep a detection the other drops. A rank-by-rank comparison
then reports a huge box difference that is not an error. Here each detection of the reference is
paired with one of the other side that has the same label and a score within ``score_tol`` (the
nearest box wins); only detections scoring clearly above the K-th score must be paired. The scores
are also compared as sorted vectors, which no tie can affect.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["DetectionDiff", "compare_detections"]

Detections = Sequence[torch.Tensor | np.ndarray]  # (labels [B, K], boxes [B, K, 4], scores [B, K])


@dataclass(frozen=True)
class DetectionDiff:
    """How far two batches of detections are apart.

    Attributes:
        max_score_diff: largest difference of the per-image sorted score vectors.
        max_box_diff: largest coordinate difference (pixels) over paired detections.
        paired: detections paired (same label, score within tolerance).
        unpaired: detections above the K-th-place margin that found no partner: a real disagreement.
    """

    max_score_diff: float
    max_box_diff: float
    paired: int
    unpaired: int

    def within(self, score_tol: float, box_tol: float) -> bool:
        """True when every detection is paired and both differences are within tolerance."""
        return self.unpaired == 0 and self.max_score_diff <= score_tol and self.max_box_diff <= box_tol

    def describe(self) -> str:
        return (
            f"max |score| diff {self.max_score_diff:.3g}, max |box| diff {self.max_box_diff:.3g} px "
            f"over {self.paired} paired detections, {self.unpaired} unpaired"
        )


def _numpy(values: torch.Tensor | np.ndarray) -> np.ndarray:
    return values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)


def _pair_image(
    ref: tuple[np.ndarray, np.ndarray, np.ndarray],
    other: tuple[np.ndarray, np.ndarray, np.ndarray],
    score_tol: float,
    margin: float,
) -> tuple[float, int, int]:
    """Pair one side's detections above ``margin`` with the other's: (max box diff, paired, unpaired)."""
    ref_labels, ref_boxes, ref_scores = ref
    labels, boxes, scores = other
    free = np.ones(len(scores), dtype=bool)
    max_box, paired, unpaired = 0.0, 0, 0
    for label, box, score in zip(ref_labels, ref_boxes, ref_scores):
        candidates = np.flatnonzero(free & (labels == label) & (np.abs(scores - score) <= score_tol))
        if len(candidates) == 0:
            unpaired += int(score > margin)  # near the K-th score it may have dropped out legitimately
            continue
        distance = np.abs(boxes[candidates] - box).max(axis=1)
        best = candidates[np.argmin(distance)]
        free[best] = False
        max_box = max(max_box, float(distance.min()))
        paired += 1
    return max_box, paired, unpaired


def compare_detections(reference: Detections, other: Detections, score_tol: float = 1e-4) -> DetectionDiff:
    """Pair ``other``'s detections with ``reference``'s per image and measure the differences.

    Args:
        reference: ``(labels [B, K], boxes [B, K, 4], scores [B, K])``, e.g. the PyTorch outputs.
        other: the same from another runtime.
        score_tol: largest score difference of a pair; detections within this of the lower K-th
            score may be missing from the other side without counting as unpaired.
    """
    ref_labels, ref_boxes, ref_scores = (_numpy(v) for v in reference)
    labels, boxes, scores = (_numpy(v) for v in other)
    if ref_scores.shape != scores.shape:
        raise ValueError(f"score shapes differ: {list(ref_scores.shape)} vs {list(scores.shape)}")
    max_score = float(np.abs(np.sort(ref_scores, axis=1) - np.sort(scores, axis=1)).max(initial=0.0))
    max_box, paired, unpaired = 0.0, 0, 0
    for i in range(len(ref_scores)):
        kth = max(ref_scores[i].min(), scores[i].min()) if scores.shape[1] else 0.0
        margin = kth + score_tol  # at most this far above the K-th score, a detection may drop out on one side
        ref_i = (ref_labels[i], ref_boxes[i], ref_scores[i])
        other_i = (labels[i], boxes[i], scores[i])
        box_i, paired_i, unpaired_i = _pair_image(ref_i, other_i, score_tol, margin)
        _, _, unpaired_back = _pair_image(other_i, ref_i, score_tol, margin)  # the other side too
        max_box = max(max_box, box_i)
        paired += paired_i
        unpaired += max(unpaired_i, unpaired_back)
    return DetectionDiff(max_score, max_box, paired, unpaired)

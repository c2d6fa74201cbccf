"""Hungarian matching between predictions and ground truth (scipy's linear_sum_assignment)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import generalized_box_iou

from ..model.outputs import HeadOutputs
from ..ops.boxes import box_cxcywh_to_xyxy

__all__ = ["HungarianMatcher", "Matching", "union_of_matchings"]

# One (query indices, target indices) pair of int64 tensors per image.
Matching = list[tuple[torch.Tensor, torch.Tensor]]

FOCAL_LOG_EPS = 1e-8


def _linear_sum_assignment(cost):
    """scipy's solver, imported on first use: ``scipy.optimize`` adds ~0.5 s to ``import dfine``."""
    from scipy.optimize import linear_sum_assignment

    return linear_sum_assignment(cost)


class HungarianMatcher(nn.Module):
    """Optimal one-to-one assignment with cost ``w_class * focal + w_bbox * L1 + w_giou * (-GIoU)``.

    Args:
        cost_class, cost_bbox, cost_giou: weights of the three costs (official 2, 5, 2).
        use_focal_loss: focal-style class cost on sigmoid scores (else ``-softmax`` probability).
        alpha, gamma: focal cost parameters (official 0.25, 2).
    """

    def __init__(
        self,
        cost_class: float = 2.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        use_focal_loss: bool = True,
        alpha: float = 0.25,
        gamma: float = 2.0,
    ) -> None:
        super().__init__()
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.use_focal_loss = use_focal_loss
        self.alpha = alpha
        self.gamma = gamma

    @torch.no_grad()
    def forward(self, outputs: HeadOutputs, targets: list[dict[str, torch.Tensor]]) -> Matching:
        """``outputs`` is one head's predictions (``logits [B, Q, C]``, ``boxes [B, Q, 4]`` cxcywh);
        ``targets[i]`` has ``labels [n_i]`` and ``boxes [n_i, 4]``. Returns one matching per image,
        query indices sorted ascending."""
        batch, num_queries = outputs.logits.shape[:2]
        logits = outputs.logits.flatten(0, 1)
        boxes = outputs.boxes.flatten(0, 1)
        target_labels = torch.cat([t["labels"] for t in targets])
        target_boxes = torch.cat([t["boxes"] for t in targets])
        sizes = [len(t["boxes"]) for t in targets]
        empty = torch.zeros(0, dtype=torch.int64)
        if sum(sizes) == 0:
            return [(empty, empty) for _ in targets]

        if self.use_focal_loss:
            prob = torch.sigmoid(logits)[:, target_labels]
            neg = (1 - self.alpha) * (prob**self.gamma) * (-(1 - prob + FOCAL_LOG_EPS).log())
            pos = self.alpha * ((1 - prob) ** self.gamma) * (-(prob + FOCAL_LOG_EPS).log())
            cost_class = pos - neg
        else:
            cost_class = -F.softmax(logits, dim=-1)[:, target_labels]
        cost_bbox = torch.cdist(boxes, target_boxes, p=1)
        cost_giou = -generalized_box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(target_boxes))
        cost = self.cost_bbox * cost_bbox + self.cost_class * cost_class + self.cost_giou * cost_giou
        cost = torch.nan_to_num(cost.view(batch, num_queries, -1).cpu(), nan=1.0)

        matching = []
        for i, image_cost in enumerate(cost.split(sizes, -1)):
            rows, cols = _linear_sum_assignment(image_cost[i].numpy())
            matching.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return matching


def union_of_matchings(matchings: list[Matching]) -> Matching:
    """GO-LSD's union matching across all decoder layers (and the pre / encoder heads).

    All (query, target) pairs of all matchings are pooled per image; the most frequent pairs come
    first, and each query keeps the first target it appears with. The ordering reproduces the
    official implementation (``torch.unique`` + a non-stable descending ``argsort``).
    """
    num_images = len(matchings[0])
    result = []
    for image in range(num_images):
        rows = torch.cat([m[image][0] for m in matchings])
        cols = torch.cat([m[image][1] for m in matchings])
        pairs = torch.stack([rows, cols], dim=1)
        unique, counts = torch.unique(pairs, return_counts=True, dim=0)
        ordered = unique[torch.argsort(counts, descending=True)]
        query_to_target: dict[int, int] = {}
        for query, target in ordered.tolist():
            query_to_target.setdefault(query, target)
        device = rows.device
        result.append(
            (
                torch.tensor(list(query_to_target), dtype=torch.int64, device=device),
                torch.tensor(list(query_to_target.values()), dtype=torch.int64, device=device),
            )
        )
    return result

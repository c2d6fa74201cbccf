"""Pure loss functions of D-FINE. Every function returns an unweighted scalar tensor.

Notation: ``idx`` is ``(batch indices, query indices)`` of matched predictions, and targets are
gathered in the same order, so row ``k`` of ``src_boxes`` is matched to row ``k`` of ``target_boxes``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import box_iou, generalized_box_iou

from ..ops.boxes import box_cxcywh_to_xyxy

__all__ = [
    "paired_iou",
    "varifocal_loss",
    "l1_box_loss",
    "giou_box_loss",
    "fine_grained_localization_loss",
    "decoupled_distillation_loss",
    "DISTILL_TEMPERATURE",
    "DDF_REFERENCE_BATCH",
]

DISTILL_TEMPERATURE = 5.0  # GO-LSD softmax temperature (official T)
DDF_REFERENCE_BATCH = 8  # DDF's matched/unmatched balance is computed as if the per-GPU batch were 8


def paired_iou(boxes1_cxcywh: torch.Tensor, boxes2_cxcywh: torch.Tensor) -> torch.Tensor:
    """IoU of row ``k`` of ``boxes1`` with row ``k`` of ``boxes2``, ``[N]``."""
    return torch.diag(box_iou(box_cxcywh_to_xyxy(boxes1_cxcywh), box_cxcywh_to_xyxy(boxes2_cxcywh)))


def varifocal_loss(
    logits: torch.Tensor,
    idx: tuple[torch.Tensor, torch.Tensor],
    target_labels: torch.Tensor,
    ious: torch.Tensor,
    num_boxes: float,
    alpha: float = 0.75,
    gamma: float = 2.0,
) -> torch.Tensor:
    """Varifocal loss (IoU-aware classification).

    The target of a matched (query, class) is its box IoU; every other entry is a negative weighted
    by ``alpha * p^gamma``. ``logits [B, Q, C]``; ``target_labels`` and ``ious`` ``[N]`` for ``idx``.
    """
    num_classes = logits.shape[-1]
    target_classes = torch.full(logits.shape[:2], num_classes, dtype=torch.int64, device=logits.device)
    target_classes[idx] = target_labels
    target = F.one_hot(target_classes, num_classes=num_classes + 1)[..., :-1]
    target_iou = torch.zeros_like(target_classes, dtype=logits.dtype)
    target_iou[idx] = ious.to(target_iou.dtype)
    target_score = target_iou.unsqueeze(-1) * target
    pred_score = torch.sigmoid(logits).detach()
    weight = alpha * pred_score.pow(gamma) * (1 - target) + target_score
    loss = F.binary_cross_entropy_with_logits(logits, target_score, weight=weight, reduction="none")
    return loss.mean(1).sum() * logits.shape[1] / num_boxes


def l1_box_loss(src_boxes: torch.Tensor, target_boxes: torch.Tensor, num_boxes: float) -> torch.Tensor:
    """Sum of L1 distances of normalized cxcywh boxes, divided by ``num_boxes``."""
    return F.l1_loss(src_boxes, target_boxes, reduction="none").sum() / num_boxes


def giou_box_loss(src_boxes: torch.Tensor, target_boxes: torch.Tensor, num_boxes: float) -> torch.Tensor:
    """Sum of ``1 - GIoU`` over matched pairs, divided by ``num_boxes``."""
    giou = torch.diag(generalized_box_iou(box_cxcywh_to_xyxy(src_boxes), box_cxcywh_to_xyxy(target_boxes)))
    return (1 - giou).sum() / num_boxes


def fine_grained_localization_loss(
    corner_logits: torch.Tensor,
    target_bins: torch.Tensor,
    weight_right: torch.Tensor,
    weight_left: torch.Tensor,
    ious: torch.Tensor,
    num_boxes: float,
) -> torch.Tensor:
    """FGL: cross-entropy of each edge distribution with the two bins around its target,
    interpolation-weighted, then weighted by the box IoU.

    ``corner_logits [N * 4, reg_max + 1]``; ``target_bins``, ``weight_*`` ``[N * 4]``; ``ious [N]``.
    """
    left = target_bins.long()
    loss = F.cross_entropy(corner_logits, left, reduction="none") * weight_left.reshape(-1) + F.cross_entropy(
        corner_logits, left + 1, reduction="none"
    ) * weight_right.reshape(-1)
    edge_weight = ious.detach().unsqueeze(-1).repeat(1, 4).reshape(-1).float()
    return (loss * edge_weight).sum() / num_boxes


def decoupled_distillation_loss(
    corner_logits: torch.Tensor,
    teacher_corners: torch.Tensor,
    teacher_logits: torch.Tensor,
    idx: tuple[torch.Tensor, torch.Tensor],
    ious: torch.Tensor,
    num_pos: torch.Tensor,
    num_neg: torch.Tensor,
    temperature: float = DISTILL_TEMPERATURE,
) -> torch.Tensor:
    """DDF: KL distillation of the final layer's edge distributions into an earlier layer.

    Matched queries are weighted by their IoU, the others by the teacher's top class score; the
    means over matched and unmatched edges are balanced by ``num_pos`` / ``num_neg``.

    Args:
        corner_logits, teacher_corners: ``[B, Q, 4 * (reg_max + 1)]``.
        teacher_logits: ``[B, Q, C]``.
        idx: matched (batch, query) indices; ``ious [N]`` their IoUs.
        num_pos, num_neg: balance factors (see :func:`ddf_balance`).
    """
    bins = corner_logits.shape[-1] // 4
    pred = corner_logits.reshape(-1, bins)
    teacher = teacher_corners.reshape(-1, bins)
    if torch.equal(pred, teacher):
        return pred.sum() * 0
    weight = teacher_logits.sigmoid().max(dim=-1)[0]
    matched = torch.zeros_like(weight, dtype=torch.bool)
    matched[idx] = True
    matched = matched.unsqueeze(-1).repeat(1, 1, 4).reshape(-1)
    weight[idx] = ious.reshape_as(weight[idx]).to(weight.dtype)
    weight = weight.unsqueeze(-1).repeat(1, 1, 4).reshape(-1).detach()

    kl = F.kl_div(
        F.log_softmax(pred / temperature, dim=1),
        F.softmax(teacher.detach() / temperature, dim=1),
        reduction="none",
    ).sum(-1)
    loss = weight * (temperature**2) * kl
    loss_matched = loss[matched].mean() if matched.any() else 0
    loss_unmatched = loss[~matched].mean() if (~matched).any() else 0
    return (loss_matched * num_pos + loss_unmatched * num_neg) / (num_pos + num_neg)


def ddf_balance(num_matched: int, batch: int, num_queries: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """DDF's matched / unmatched weights: square roots of the edge counts scaled to a batch of 8."""
    scale = DDF_REFERENCE_BATCH / batch
    pos = torch.tensor(4 * num_matched * scale, device=device) ** 0.5
    neg = torch.tensor(4 * (batch * num_queries - num_matched) * scale, device=device) ** 0.5
    return pos, neg

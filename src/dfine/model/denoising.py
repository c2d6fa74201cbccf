"""Contrastive denoising (CDN) training queries (DN-DETR / DINO, as in RT-DETR and D-FINE).

Each ground-truth box appears in ``num_group`` groups, once as a positive (small noise, should be
reconstructed) and once as a negative (large noise, should be rejected). Labels are flipped with
probability ``label_noise_ratio / 2``. The random calls happen in the official order, so a seeded
run draws the same noise as the official implementation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..ops.boxes import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh, inverse_sigmoid

__all__ = ["DenoisingGroup", "build_denoising_group"]


@dataclass
class DenoisingGroup:
    """Denoising queries prepended to the matching queries.

    Attributes:
        content: ``[B, N_dn, D]`` embedded (noised) labels.
        ref_points_unact: ``[B, N_dn, 4]`` noised boxes as logits.
        attn_mask: ``[N_dn + Q, N_dn + Q]`` bool, True where attention is blocked.
        positive_idx: per image, the query indices of the positive copies.
        num_group: groups of copies.
        num_split: ``[N_dn, Q]``.
    """

    content: torch.Tensor
    ref_points_unact: torch.Tensor
    attn_mask: torch.Tensor
    positive_idx: tuple[torch.Tensor, ...]
    num_group: int
    num_split: list[int]


def build_denoising_group(
    targets: list[dict[str, torch.Tensor]],
    num_classes: int,
    num_queries: int,
    class_embed: nn.Embedding,
    num_denoising: int = 100,
    label_noise_ratio: float = 0.5,
    box_noise_scale: float = 1.0,
) -> DenoisingGroup | None:
    """Build the denoising queries for a batch; ``None`` when disabled or no image has a box.

    ``targets[i]`` holds ``labels [n_i]`` (int64) and ``boxes [n_i, 4]`` cxcywh normalized.
    """
    if num_denoising <= 0:
        return None
    num_gts = [len(t["labels"]) for t in targets]
    device = targets[0]["labels"].device
    max_gt = max(num_gts)
    if max_gt == 0:
        return None
    num_group = max(num_denoising // max_gt, 1)
    batch = len(num_gts)

    query_class = torch.full([batch, max_gt], num_classes, dtype=torch.int32, device=device)
    query_bbox = torch.zeros([batch, max_gt, 4], device=device)
    pad_gt_mask = torch.zeros([batch, max_gt], dtype=torch.bool, device=device)
    for i, n in enumerate(num_gts):
        if n > 0:
            query_class[i, :n] = targets[i]["labels"]
            query_bbox[i, :n] = targets[i]["boxes"]
            pad_gt_mask[i, :n] = True
    # every group holds a positive and a negative copy of each box
    query_class = query_class.tile([1, 2 * num_group])
    query_bbox = query_bbox.tile([1, 2 * num_group, 1])
    pad_gt_mask = pad_gt_mask.tile([1, 2 * num_group])

    negative_mask = torch.zeros([batch, max_gt * 2, 1], device=device)
    negative_mask[:, max_gt:] = 1
    negative_mask = negative_mask.tile([1, num_group, 1])
    positive_mask = (1 - negative_mask).squeeze(-1) * pad_gt_mask
    positive_idx = torch.nonzero(positive_mask)[:, 1]
    positive_idx = torch.split(positive_idx, [n * num_group for n in num_gts])
    total = int(max_gt * 2 * num_group)

    if label_noise_ratio > 0:
        flip = torch.rand_like(query_class, dtype=torch.float) < (label_noise_ratio * 0.5)
        new_label = torch.randint_like(flip, 0, num_classes, dtype=query_class.dtype)
        query_class = torch.where(flip & pad_gt_mask, new_label, query_class)

    if box_noise_scale > 0:
        boxes_xyxy = box_cxcywh_to_xyxy(query_bbox)
        half_wh = torch.tile(query_bbox[..., 2:] * 0.5, [1, 1, 2]) * box_noise_scale
        sign = torch.randint_like(query_bbox, 0, 2) * 2.0 - 1.0
        magnitude = torch.rand_like(query_bbox)
        # positives move by < half the size, negatives by 1..2 halves
        magnitude = (magnitude + 1.0) * negative_mask + magnitude * (1 - negative_mask)
        boxes_xyxy = torch.clip(boxes_xyxy + sign * magnitude * half_wh, min=0.0, max=1.0)
        query_bbox = box_xyxy_to_cxcywh(boxes_xyxy)
        query_bbox = torch.where(query_bbox < 0, -query_bbox, query_bbox)
    ref_points_unact = inverse_sigmoid(query_bbox)
    content = class_embed(query_class)

    size = total + num_queries
    attn_mask = torch.zeros([size, size], dtype=torch.bool, device=device)
    attn_mask[total:, :total] = True  # matching queries cannot see the denoising ones
    group = max_gt * 2
    for i in range(num_group):  # groups cannot see each other
        rows = slice(group * i, group * (i + 1))
        attn_mask[rows, group * (i + 1) : total] = True
        attn_mask[rows, : group * i] = True
    return DenoisingGroup(content, ref_points_unact, attn_mask, positive_idx, num_group, [total, num_queries])

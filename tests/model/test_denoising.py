"""Contrastive denoising groups."""

from __future__ import annotations

import torch
from torch import nn

from dfine.model.denoising import build_denoising_group
from dfine.ops.boxes import box_cxcywh_to_xyxy


def _targets():
    boxes0 = torch.tensor([[0.3, 0.4, 0.2, 0.3], [0.7, 0.6, 0.2, 0.4], [0.5, 0.5, 0.4, 0.4]])
    return [
        {"labels": torch.tensor([1, 2, 0]), "boxes": boxes0},
        {"labels": torch.tensor([3]), "boxes": torch.tensor([[0.5, 0.5, 0.5, 0.5]])},
    ]


def test_group_layout_and_mask():
    torch.manual_seed(0)
    embed = nn.Embedding(5, 8, padding_idx=4)
    group = build_denoising_group(_targets(), 4, 10, embed, num_denoising=12)
    max_gt, num_group = 3, 4
    total = max_gt * 2 * num_group
    assert group.num_group == num_group and group.num_split == [total, 10]
    assert group.content.shape == (2, total, 8) and group.ref_points_unact.shape == (2, total, 4)
    mask = group.attn_mask
    assert mask.shape == (total + 10, total + 10)
    assert mask[total:, :total].all() and not mask[total:, total:].any()
    for g in range(num_group):
        rows = slice(6 * g, 6 * g + 6)
        assert not mask[rows, rows].any()  # a group sees itself
        assert mask[rows, :total].sum() == 6 * (total - 6)  # and no other group
    # positives: the first max_gt slots of every group, only for real boxes
    assert group.positive_idx[0].tolist() == [i + 6 * g for g in range(4) for i in range(3)]
    assert group.positive_idx[1].tolist() == [6 * g for g in range(4)]


def test_positive_noise_is_smaller_than_negative_noise():
    torch.manual_seed(0)
    target = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])}]
    group = build_denoising_group(target, 2, 5, nn.Embedding(3, 4), num_denoising=200, label_noise_ratio=0.0)
    boxes = box_cxcywh_to_xyxy(torch.sigmoid(group.ref_points_unact[0]))
    shift = (boxes - torch.tensor([0.3, 0.3, 0.7, 0.7])).abs().max(-1).values
    positives, negatives = shift[0::2], shift[1::2]
    assert positives.max() <= 0.2 + 1e-4  # < half the size
    # negatives move each edge by one to two halves (then clipped, and flipped where edges cross)
    assert negatives.mean() > 1.5 * positives.mean()


def test_disabled_or_empty_returns_none():
    embed = nn.Embedding(3, 4)
    assert build_denoising_group(_targets(), 4, 10, embed, num_denoising=0) is None
    empty = [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}]
    assert build_denoising_group(empty, 2, 10, embed) is None

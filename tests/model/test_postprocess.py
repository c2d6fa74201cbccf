"""Post-processor: top-K over (query, class), boxes to pixels, COCO id remap."""

from __future__ import annotations

import pytest
import torch

from dfine import HeadOutputs, PostProcessor


def _outputs():
    logits = torch.full((1, 3, 4), -10.0)
    logits[0, 1, 2] = 3.0  # best: query 1, class 2
    logits[0, 0, 0] = 1.0
    logits[0, 2, 3] = 0.0
    boxes = torch.tensor([[[0.5, 0.5, 1.0, 1.0], [0.25, 0.5, 0.5, 0.2], [0.1, 0.1, 0.1, 0.1]]])
    return HeadOutputs(logits, boxes)


def test_topk_labels_boxes_in_pixels():
    post = PostProcessor(num_classes=4, num_top_queries=2)
    (result,) = post(_outputs(), torch.tensor([[200, 100]]))  # (w, h)
    assert result["labels"].tolist() == [2, 0]
    torch.testing.assert_close(result["scores"], torch.sigmoid(torch.tensor([3.0, 1.0])))
    torch.testing.assert_close(result["boxes"][0], torch.tensor([0.0, 40.0, 100.0, 60.0]))
    torch.testing.assert_close(result["boxes"][1], torch.tensor([0.0, 0.0, 200.0, 100.0]))


def test_coco_remap_uses_category_ids():
    logits = torch.full((1, 2, 80), -10.0)
    logits[0, 0, 79] = 5.0  # toothbrush -> id 90
    logits[0, 1, 11] = 4.0  # stop sign -> id 13
    out = HeadOutputs(logits, torch.rand(1, 2, 4))
    (result,) = PostProcessor(num_top_queries=2, remap_mscoco_category=True)(out, torch.tensor([[10, 10]]))
    assert result["labels"].tolist() == [90, 13]


def test_remap_needs_80_classes():
    with pytest.raises(ValueError, match="remap_mscoco_category"):
        PostProcessor(num_classes=3, remap_mscoco_category=True)


def test_bad_orig_sizes():
    with pytest.raises(ValueError, match=r"\[B, 2\] \(width, height\)"):
        PostProcessor(num_classes=4)(_outputs(), torch.tensor([200, 100]))


def test_softmax_mode_takes_best_class_per_query():
    out = _outputs()
    out = HeadOutputs(torch.cat([out.logits, torch.zeros(1, 3, 1)], dim=-1), out.boxes)  # + background
    labels, _, scores = PostProcessor(num_classes=4, num_top_queries=2, use_focal_loss=False).decode(
        out, torch.tensor([[1, 1]])
    )
    assert labels.tolist() == [[2, 0]]
    assert scores[0, 0] > scores[0, 1]

"""Anchors, valid mask and top-k query selection."""

from __future__ import annotations

import pytest
import torch

from dfine.model.query_selection import generate_anchors, select_topk


def test_anchor_centres_sizes_and_validity():
    anchors, valid = generate_anchors([(4, 2), (2, 1)])
    assert anchors.shape == (1, 10, 4) and valid.shape == (1, 10, 1)
    boxes = torch.sigmoid(anchors[0, :8])
    # row-major cells: (x + .5) / W, (y + .5) / H, size 0.05 at level 0
    torch.testing.assert_close(boxes[1], torch.tensor([0.75, 0.125, 0.05, 0.05]))
    torch.testing.assert_close(boxes[2], torch.tensor([0.25, 0.375, 0.05, 0.05]))
    assert torch.isinf(anchors[0, 8:]).all() or valid[0, 8:].all()


@pytest.mark.parametrize(("shapes", "invalid"), [([(40, 40), (20, 20)], 0), ([(80, 80), (40, 40), (20, 20)], 316)])
def test_invalid_anchor_counts_match_official(shapes, invalid):
    anchors, valid = generate_anchors(shapes)
    assert int((~valid).sum()) == invalid
    assert torch.isinf(anchors[~valid.expand_as(anchors)]).all()


def test_select_topk_default_gathers_consistently():
    torch.manual_seed(0)
    memory = torch.randn(2, 10, 3)
    logits = torch.randn(2, 10, 5)
    anchors = torch.randn(2, 10, 4)
    top_mem, top_logits, top_anchors, index = select_topk(memory, logits, anchors, 4)
    expected = logits.max(-1).values.topk(4, dim=-1).indices
    assert torch.equal(index, expected)
    for b in range(2):
        assert torch.equal(top_mem[b], memory[b, index[b]])
        assert torch.equal(top_logits[b], logits[b, index[b]])
        assert torch.equal(top_anchors[b], anchors[b, index[b]])


def test_select_topk_unknown_method():
    with pytest.raises(ValueError, match="query_select_method"):
        select_topk(torch.zeros(1, 4, 2), torch.zeros(1, 4, 3), torch.zeros(1, 4, 4), 2, method="best")

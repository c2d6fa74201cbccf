"""Box conversions and the clipped inverse sigmoid."""

from __future__ import annotations

import torch

from dfine.ops.boxes import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh, inverse_sigmoid


def test_round_trip():
    boxes = torch.rand(5, 3, 4)
    torch.testing.assert_close(box_xyxy_to_cxcywh(box_cxcywh_to_xyxy(boxes)), boxes)


def test_known_values():
    xyxy = box_cxcywh_to_xyxy(torch.tensor([0.5, 0.5, 0.2, 0.4]))
    torch.testing.assert_close(xyxy, torch.tensor([0.4, 0.3, 0.6, 0.7]))


def test_inverse_sigmoid_is_clipped():
    x = torch.tensor([0.0, 0.5, 1.0, 0.25])
    y = inverse_sigmoid(x)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(torch.sigmoid(y[1:2]), x[1:2])
    torch.testing.assert_close(y[0], torch.log(torch.tensor(1e-5)))

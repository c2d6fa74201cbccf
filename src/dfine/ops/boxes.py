"""Pure box math.

Formats are encoded in the names: ``cxcywh`` (centre x, centre y, width, height) and ``xyxy``
(left, top, right, bottom). Unless a name says ``abs``, coordinates are normalized to [0, 1] by the
image width and height. torchvision.ops is used where it already has the operation.
"""

from __future__ import annotations

import torch
from torchvision.ops import box_convert, generalized_box_iou

__all__ = [
    "box_cxcywh_to_xyxy",
    "box_xyxy_to_cxcywh",
    "generalized_box_iou",
    "inverse_sigmoid",
]


def box_cxcywh_to_xyxy(boxes_cxcywh: torch.Tensor) -> torch.Tensor:
    """[..., 4] cxcywh -> [..., 4] xyxy, same units."""
    return box_convert(boxes_cxcywh, in_fmt="cxcywh", out_fmt="xyxy")


def box_xyxy_to_cxcywh(boxes_xyxy: torch.Tensor) -> torch.Tensor:
    """[..., 4] xyxy -> [..., 4] cxcywh, same units."""
    return box_convert(boxes_xyxy, in_fmt="xyxy", out_fmt="cxcywh")


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Logit of ``x`` with both ``x`` and ``1 - x`` clipped at ``eps`` (the official D-FINE clip)."""
    x = x.clip(min=0.0, max=1.0)
    return torch.log(x.clip(min=eps) / (1 - x).clip(min=eps))

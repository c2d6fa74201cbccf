"""Fine-grained Distribution Refinement (FDR), the D-FINE box representation.

Each box edge is a distance from the initial box, given as a distribution over ``reg_max + 1`` bins.
The bins' values come from the non-uniform weighting function ``W(n)``: fine steps near zero, coarse
steps at the ends. The edge distance is the expectation ``sum(softmax(logits) * W)``, and distances
are turned into a box relative to the initial (reference) box scaled by ``reg_scale``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..ops.boxes import box_xyxy_to_cxcywh

__all__ = ["weighting_function", "distribution_integral", "distance2bbox", "bbox2distance", "bin_targets"]


def weighting_function(reg_max: int, up: torch.Tensor, reg_scale: torch.Tensor, precise: bool = False) -> torch.Tensor:
    """Bin values ``W`` of the edge distributions, ``[reg_max + 1]``, symmetric around 0.

    With ``a = |up| * |reg_scale|`` and ``step = (a + 1) ** (2 / (reg_max - 2))``:
    ``W = [-2a, -(step^(k) - 1) ... -(step^1 - 1), 0, step^1 - 1 ... step^(k) - 1, 2a]``, k = reg_max/2 - 1.

    ``precise=True`` evaluates in float64 and casts to ``up``'s dtype (what the official deploy path
    does); otherwise the arithmetic runs in ``up``'s dtype like the official training path.
    """
    half = reg_max // 2
    compute_dtype = torch.float64 if precise else up.dtype
    up_value = up.reshape(-1)[:1].to(compute_dtype).abs()
    scale = reg_scale.reshape(-1)[:1].to(compute_dtype).abs()
    upper1 = up_value * scale
    upper2 = upper1 * 2
    step = (upper1 + 1) ** (2 / (reg_max - 2))
    right = torch.cat([step**i - 1 for i in range(1, half)])
    left = torch.cat([-(step**i) + 1 for i in range(half - 1, 0, -1)])
    values = torch.cat([-upper2, left, torch.zeros_like(upper1), right, upper2])
    return values.to(up.dtype)


def distribution_integral(corner_logits: torch.Tensor, project: torch.Tensor, reg_max: int) -> torch.Tensor:
    """Expected edge distances: ``[..., 4 * (reg_max + 1)]`` logits -> ``[..., 4]``."""
    shape = corner_logits.shape
    probs = F.softmax(corner_logits.reshape(-1, reg_max + 1), dim=1)
    distances = F.linear(probs, project.to(probs.device, probs.dtype))
    return distances.reshape(*shape[:-1], 4)


def distance2bbox(points: torch.Tensor, distance: torch.Tensor, reg_scale: torch.Tensor) -> torch.Tensor:
    """Boxes from reference boxes and edge distances.

    Args:
        points: reference boxes ``[..., 4]`` cxcywh, normalized.
        distance: edge distances ``[..., 4]`` (left, top, right, bottom) in units of ``w / reg_scale``
            (resp. ``h``), measured from the reference box's edges at ``0.5 * reg_scale``.
        reg_scale: scalar tensor.

    Returns:
        ``[..., 4]`` cxcywh boxes.
    """
    reg_scale = reg_scale.abs()
    half = 0.5 * reg_scale
    cx, cy, w, h = points.unbind(-1)
    x1 = cx - (half + distance[..., 0]) * (w / reg_scale)
    y1 = cy - (half + distance[..., 1]) * (h / reg_scale)
    x2 = cx + (half + distance[..., 2]) * (w / reg_scale)
    y2 = cy + (half + distance[..., 3]) * (h / reg_scale)
    return box_xyxy_to_cxcywh(torch.stack([x1, y1, x2, y2], -1))


def bin_targets(
    distances: torch.Tensor, reg_max: int, up: torch.Tensor, reg_scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Place target edge distances between two neighbouring bins of ``W``.

    Args:
        distances: target distances, any shape (flattened).

    Returns:
        ``(left_bin, weight_right, weight_left)``, each ``[N]``: the (float) index of the bin at or
        left of each distance and linear-interpolation weights of that bin and the next. Distances
        below ``W[0]`` put all weight on bin 0; above ``W[-1]`` on the last bin (index reg_max - 0.1).
    """
    distances = distances.reshape(-1)
    values = weighting_function(reg_max, up, reg_scale)
    left_index = ((values.unsqueeze(0) - distances.unsqueeze(1)) <= 0).sum(dim=1) - 1
    indices = left_index.float()
    weight_right = torch.zeros_like(indices)
    weight_left = torch.zeros_like(indices)

    inside = (indices >= 0) & (indices < reg_max)
    left = indices[inside].long()
    left_gap = (distances[inside] - values[left]).abs()
    right_gap = (values[left + 1] - distances[inside]).abs()
    weight_right[inside] = left_gap / (left_gap + right_gap)
    weight_left[inside] = 1.0 - weight_right[inside]

    below = indices < 0
    weight_right[below] = 0.0
    weight_left[below] = 1.0
    indices[below] = 0.0
    above = indices >= reg_max
    weight_right[above] = 1.0
    weight_left[above] = 0.0
    indices[above] = reg_max - 0.1
    return indices, weight_right, weight_left


def bbox2distance(
    points: torch.Tensor,
    boxes_xyxy: torch.Tensor,
    reg_max: int,
    reg_scale: torch.Tensor,
    up: torch.Tensor,
    eps: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FGL targets: the edge distances from reference boxes to target boxes, as bin positions.

    Inverse of :func:`distance2bbox`. ``points`` are reference boxes ``[N, 4]`` cxcywh and
    ``boxes_xyxy`` the targets ``[N, 4]``. Returns ``[N * 4]`` bin positions clamped to
    ``[0, reg_max - eps]`` and the right/left interpolation weights, all detached.
    """
    reg_scale = reg_scale.abs()
    unit_w = points[:, 2] / reg_scale + 1e-16
    unit_h = points[:, 3] / reg_scale + 1e-16
    half = 0.5 * reg_scale
    left = (points[:, 0] - boxes_xyxy[:, 0]) / unit_w - half
    top = (points[:, 1] - boxes_xyxy[:, 1]) / unit_h - half
    right = (boxes_xyxy[:, 2] - points[:, 0]) / unit_w - half
    bottom = (boxes_xyxy[:, 3] - points[:, 1]) / unit_h - half
    distances = torch.stack([left, top, right, bottom], -1)
    positions, weight_right, weight_left = bin_targets(distances, reg_max, up, reg_scale)
    positions = positions.clamp(min=0, max=reg_max - eps)
    return positions.reshape(-1).detach(), weight_right.detach(), weight_left.detach()

"""Encoder-side query selection: anchors over the feature grids and top-k selection of queries."""

from __future__ import annotations

import torch

__all__ = ["generate_anchors", "select_topk"]

ANCHOR_BASE_SIZE = 0.05  # anchor width/height at the finest level, doubled per level (RT-DETR)


def generate_anchors(
    spatial_shapes: list[tuple[int, int]],
    eps: float = 1e-2,
    grid_size: float = ANCHOR_BASE_SIZE,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor boxes (as logits) for every cell of every level, and which of them are valid.

    Returns:
        anchors: ``[1, sum(H*W), 4]`` inverse-sigmoid cxcywh; invalid anchors are ``+inf``.
        valid_mask: ``[1, sum(H*W), 1]`` bool, True where all coordinates lie in ``(eps, 1 - eps)``.
    """
    anchors = []
    for level, (height, width) in enumerate(spatial_shapes):
        grid_y, grid_x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        grid_xy = torch.stack([grid_x, grid_y], dim=-1)
        grid_xy = (grid_xy.unsqueeze(0) + 0.5) / torch.tensor([width, height], dtype=dtype)
        wh = torch.ones_like(grid_xy) * grid_size * (2.0**level)
        anchors.append(torch.cat([grid_xy, wh], dim=-1).reshape(-1, height * width, 4))
    anchors = torch.cat(anchors, dim=1).to(device)
    valid_mask = ((anchors > eps) & (anchors < 1 - eps)).all(-1, keepdim=True)
    anchors = torch.log(anchors / (1 - anchors))
    anchors = torch.where(valid_mask, anchors, torch.inf)
    return anchors, valid_mask


def select_topk(
    memory: torch.Tensor, logits: torch.Tensor, anchors: torch.Tensor, topk: int, method: str = "default"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pick ``topk`` encoder positions by class score.

    Args:
        memory: ``[B, N, D]``; logits: ``[B, N, C]``; anchors: ``[B, N, 4]``.
        method: ``default`` (max over classes), ``one2many`` (top over all (position, class) pairs)
            or ``agnostic`` (single-logit head).

    Returns:
        ``(memory [B, K, D], logits [B, K, C], anchors [B, K, 4], indices [B, K])``.
    """
    if method == "default":
        _, index = torch.topk(logits.max(-1).values, topk, dim=-1)
    elif method == "one2many":
        _, index = torch.topk(logits.flatten(1), topk, dim=-1)
        index = index // logits.shape[-1]
    elif method == "agnostic":
        _, index = torch.topk(logits.squeeze(-1), topk, dim=-1)
    else:
        raise ValueError(f"unknown query_select_method {method!r}; choose default, one2many or agnostic")

    def gather(x: torch.Tensor) -> torch.Tensor:
        return x.gather(dim=1, index=index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))

    return gather(memory), gather(logits), gather(anchors), index

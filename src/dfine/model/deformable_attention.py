"""Multi-scale deformable attention as D-FINE uses it (the decoder's cross-attention).

Differences from Deformable-DETR that matter for weight compatibility: no value or output
projection, a per-level number of sampling points, one softmax over all points of a head across all
levels, and offsets scaled by the reference box size (``ref_wh * offset / n_points_level * 0.5``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MSDeformableAttention", "deformable_attention_core", "deformable_attention_gather"]

SAMPLING_METHODS = ("default", "discrete")


def deformable_attention_core(
    value: list[torch.Tensor],
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    num_points_list: list[int],
    method: str = "default",
) -> torch.Tensor:
    """Sample each level at its points and take the attention-weighted sum.

    Args:
        value: per level ``[B * n_head, head_dim, H_l, W_l]``.
        spatial_shapes: ``(H_l, W_l)`` per level.
        sampling_locations: ``[B, Q, n_head, sum(points), 2]``, normalized (x, y) in [0, 1].
        attention_weights: ``[B, Q, n_head, sum(points)]``, softmax-normalized.
        num_points_list: points per level.
        method: ``default`` (bilinear ``grid_sample``) or ``discrete`` (nearest cell, no interpolation).

    Returns:
        ``[B, Q, n_head * head_dim]``.
    """
    batch, num_queries, num_heads, total_points, _ = sampling_locations.shape
    head_dim = value[0].shape[1]
    if method == "default":
        grids = 2 * sampling_locations - 1
    elif method == "discrete":
        grids = sampling_locations
    else:
        raise ValueError(f"unknown deformable attention method {method!r}; choose one of {SAMPLING_METHODS}")
    grids = grids.permute(0, 2, 1, 3, 4).flatten(0, 1)  # [B*n_head, Q, sum(points), 2]
    grids_per_level = grids.split(num_points_list, dim=-2)

    sampled = []
    for level, (height, width) in enumerate(spatial_shapes):
        value_l = value[level]
        grid_l = grids_per_level[level]
        if method == "default":
            sampled.append(F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False))
        else:
            scale = torch.tensor([[width, height]], device=value_l.device, dtype=grid_l.dtype)
            coords = (grid_l * scale + 0.5).to(torch.int64)
            # clamp x to the width and y to the height of this level
            coords = torch.stack([coords[..., 0].clamp(0, width - 1), coords[..., 1].clamp(0, height - 1)], dim=-1)
            coords = coords.reshape(batch * num_heads, -1, 2)
            rows = torch.arange(coords.shape[0], device=value_l.device).unsqueeze(-1)
            picked = value_l[rows, :, coords[..., 1], coords[..., 0]]  # [B*n_head, Q*P_l, C]
            sampled.append(picked.permute(0, 2, 1).reshape(batch * num_heads, head_dim, num_queries, -1))

    weights = attention_weights.permute(0, 2, 1, 3).reshape(batch * num_heads, 1, num_queries, total_points)
    output = (torch.cat(sampled, dim=-1) * weights).sum(-1)  # [B*n_head, C, Q]
    return output.reshape(batch, num_heads * head_dim, num_queries).permute(0, 2, 1)


def _axis_taps(coord: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Along one axis: the two neighbour cells (clamped into the map) and their linear weights.

    ``coord`` is in pixel units (``loc * size - 0.5``, grid_sample's align_corners=False). A
    neighbour outside the map gets weight 0 (zero padding) and a clamped, harmless index.
    """
    low = coord.floor()
    frac = coord - low
    low = low.long()
    high = low + 1
    low_cell, high_cell = low.clamp(0, size - 1), high.clamp(0, size - 1)
    weight_low = torch.where(low_cell == low, 1 - frac, 0)
    weight_high = torch.where(high_cell == high, frac, 0)
    return low_cell, high_cell, weight_low, weight_high


def deformable_attention_gather(
    value: list[torch.Tensor],
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    num_points_list: list[int],
) -> torch.Tensor:
    """:func:`deformable_attention_core` (bilinear, zero padding) as one weighted gather per level.

    Each (query, head) sums the ``4 * points`` bilinear taps of its points as rows of ``head_dim``
    channels, weighted by ``attention * bilinear`` weight, with ``F.embedding_bag``; the core instead
    samples ``[B * n_head, head_dim, Q, P]`` with ``grid_sample`` and reduces it. Same arguments and
    result as the core up to fp32 rounding, and faster on CPU. With batch 1 the per-level tables are
    views of the decoder memory (no copy).
    """
    batch, num_queries, num_heads, _, _ = sampling_locations.shape
    head_dim = value[0].shape[1]
    bags = batch * num_queries * num_heads
    device = sampling_locations.device
    batch_index = torch.arange(batch, device=device).reshape(batch, 1, 1, 1)
    head_index = torch.arange(num_heads, device=device).reshape(1, 1, num_heads, 1)

    output = None
    levels = zip(
        value,
        spatial_shapes,
        sampling_locations.split(num_points_list, dim=-2),
        attention_weights.split(num_points_list, dim=-1),
    )
    for value_l, (height, width), locations_l, weights_l in levels:
        # [B * n_head, head_dim, H, W] -> table [B * H * W * n_head, head_dim], row (b * H * W + pixel) * n_head + h
        table = value_l.unflatten(0, (batch, num_heads)).permute(0, 3, 4, 1, 2).reshape(-1, head_dim)
        x0, x1, wx0, wx1 = _axis_taps(locations_l[..., 0] * width - 0.5, width)  # [B, Q, n_head, P_l]
        y0, y1, wy0, wy1 = _axis_taps(locations_l[..., 1] * height - 0.5, height)
        x0, x1 = x0 * num_heads, x1 * num_heads
        row_base = batch_index * (height * width * num_heads) + head_index
        y0, y1 = y0 * (width * num_heads) + row_base, y1 * (width * num_heads) + row_base
        wy0, wy1 = wy0 * weights_l, wy1 * weights_l
        # the 4 corners (nw, ne, sw, se) of every point of a bag: [B, Q, n_head, 4, P_l]
        rows = torch.stack([y0 + x0, y0 + x1, y1 + x0, y1 + x1], dim=-2)
        taps = torch.stack([wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1], dim=-2)
        sampled = F.embedding_bag(
            rows.reshape(bags, -1), table, per_sample_weights=taps.reshape(bags, -1).to(table.dtype), mode="sum"
        )
        output = sampled if output is None else output + sampled
    return output.reshape(batch, num_queries, num_heads * head_dim)


class MSDeformableAttention(nn.Module):
    """Deformable cross-attention from queries to multi-level memory.

    Args:
        embed_dim: query / value width.
        num_heads: attention heads.
        num_levels: feature levels.
        num_points: sampling points per level (an int for all levels, or one per level).
        method: ``default`` or ``discrete`` sampling.
        offset_scale: offsets are multiplied by ``ref_wh * offset_scale / n_points_level``.
    """

    def __init__(
        self,
        embed_dim: int = 256,
        num_heads: int = 8,
        num_levels: int = 4,
        num_points: int | list[int] = 4,
        method: str = "default",
        offset_scale: float = 0.5,
    ) -> None:
        super().__init__()
        if method not in SAMPLING_METHODS:
            raise ValueError(f"unknown cross_attn_method {method!r}; choose one of {SAMPLING_METHODS}")
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
        if isinstance(num_points, int):
            num_points = [num_points] * num_levels
        if len(num_points) != num_levels:
            raise ValueError(f"num_points {list(num_points)} must give one count per level ({num_levels})")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.num_points_list = list(num_points)
        self.offset_scale = offset_scale
        self.method = method
        total = sum(self.num_points_list)
        self.register_buffer(
            "num_points_scale",
            torch.tensor([1 / n for n in self.num_points_list for _ in range(n)], dtype=torch.float32),
        )
        self.sampling_offsets = nn.Linear(embed_dim, num_heads * total * 2)
        self.attention_weights = nn.Linear(embed_dim, num_heads * total)
        self._reset_parameters()
        if method == "discrete":
            for p in self.sampling_offsets.parameters():
                p.requires_grad_(False)

    def _reset_parameters(self) -> None:
        nn.init.constant_(self.sampling_offsets.weight, 0)
        thetas = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True).values
        grid = grid.reshape(self.num_heads, 1, 2).tile([1, sum(self.num_points_list), 1])
        scaling = torch.cat([torch.arange(1, n + 1) for n in self.num_points_list]).reshape(1, -1, 1)
        grid = grid * scaling
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.constant_(self.attention_weights.weight, 0)
        nn.init.constant_(self.attention_weights.bias, 0)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        value: list[torch.Tensor],
        spatial_shapes: list[tuple[int, int]],
    ) -> torch.Tensor:
        """``query`` [B, Q, D], ``reference_points`` [B, Q, 1, 4] cxcywh in [0, 1] -> [B, Q, D]."""
        batch, num_queries = query.shape[:2]
        total = sum(self.num_points_list)
        offsets = self.sampling_offsets(query).reshape(batch, num_queries, self.num_heads, total, 2)
        weights = self.attention_weights(query).reshape(batch, num_queries, self.num_heads, total)
        weights = F.softmax(weights, dim=-1)
        if reference_points.shape[-1] != 4:
            raise ValueError("D-FINE deformable attention expects 4-d (cx, cy, w, h) reference points")
        point_scale = self.num_points_scale.to(dtype=query.dtype).unsqueeze(-1)  # [P, 1]
        offsets = offsets * point_scale * reference_points[:, :, None, :, 2:] * self.offset_scale
        locations = reference_points[:, :, None, :, :2] + offsets
        return self.sample(value, spatial_shapes, locations, weights)

    def sample(
        self,
        value: list[torch.Tensor],
        spatial_shapes: list[tuple[int, int]],
        locations: torch.Tensor,
        weights: torch.Tensor,
    ) -> torch.Tensor:
        """:func:`deformable_attention_core` at ``locations`` [B, Q, n_head, P, 2] -> [B, Q, D]."""
        return deformable_attention_core(value, spatial_shapes, locations, weights, self.num_points_list, self.method)

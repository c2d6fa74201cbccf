"""Multi-scale deformable attention against a per-point reference loop, and its gradients."""

from __future__ import annotations

import pytest
import torch

from dfine.model.deformable_attention import MSDeformableAttention, deformable_attention_core


def _loop_reference(value, shapes, locations, weights, points):
    """Bilinear sampling of one point at a time (align_corners=False, zero padding)."""
    batch, queries, heads, _, _ = locations.shape
    channels = value[0].shape[1]
    out = torch.zeros(batch, queries, heads, channels, dtype=value[0].dtype)
    offsets = [0] + list(torch.tensor(points).cumsum(0))
    for b in range(batch):
        for h in range(heads):
            for level, (height, width) in enumerate(shapes):
                v = value[level][b * heads + h]  # [C, H, W]
                for p in range(offsets[level], offsets[level + 1]):
                    for q in range(queries):
                        x, y = locations[b, q, h, p] * torch.tensor([width, height]) - 0.5
                        x0, y0 = int(torch.floor(x)), int(torch.floor(y))
                        sample = torch.zeros(channels, dtype=v.dtype)
                        for dx in (0, 1):
                            for dy in (0, 1):
                                xi, yi = x0 + dx, y0 + dy
                                if 0 <= xi < width and 0 <= yi < height:
                                    wgt = (1 - abs(x - xi)) * (1 - abs(y - yi))
                                    sample += wgt * v[:, yi, xi]
                        out[b, q, h] += weights[b, q, h, p] * sample
    return out.reshape(batch, queries, heads * channels)


def _inputs(dtype=torch.float64):
    torch.manual_seed(0)
    shapes = [(6, 5), (3, 3)]
    points = [2, 3]
    batch, heads, channels, queries = 2, 2, 3, 4
    value = [torch.randn(batch * heads, channels, h, w, dtype=dtype) for h, w in shapes]
    locations = torch.rand(batch, queries, heads, sum(points), 2, dtype=dtype) * 1.2 - 0.1
    weights = torch.softmax(torch.randn(batch, queries, heads, sum(points), dtype=dtype), -1)
    return value, shapes, locations, weights, points


def test_core_matches_loop_reference():
    value, shapes, locations, weights, points = _inputs()
    got = deformable_attention_core(value, shapes, locations, weights, points)
    expected = _loop_reference(value, shapes, locations, weights, points)
    torch.testing.assert_close(got, expected)


def test_core_gradcheck():
    value, shapes, locations, weights, points = _inputs()
    value = [v.requires_grad_() for v in value]
    weights.requires_grad_()

    def fn(weights, *value):
        return deformable_attention_core(list(value), shapes, locations, weights, points)

    assert torch.autograd.gradcheck(fn, (weights, *value))


def test_discrete_method_picks_nearest_cell():
    value, shapes, locations, weights, points = _inputs(torch.float32)
    locations = locations.clamp(0.0, 0.999)
    got = deformable_attention_core(value, shapes, locations, weights, points, method="discrete")
    # nearest-cell sampling equals bilinear sampling at the snapped cell centres
    snapped = []
    start = 0
    for (h, w), n in zip(shapes, points):
        loc = locations[..., start : start + n, :]
        cell = (loc * torch.tensor([w, h]) + 0.5).floor().clamp(min=0)
        cell = torch.minimum(cell, torch.tensor([w - 1, h - 1]))
        snapped.append((cell + 0.5) / torch.tensor([w, h]))
        start += n
    expected = deformable_attention_core(value, shapes, torch.cat(snapped, dim=-2), weights, points)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_module_shapes_and_initial_offsets():
    attn = MSDeformableAttention(embed_dim=16, num_heads=4, num_levels=2, num_points=[3, 2])
    assert attn.num_points_scale.tolist() == pytest.approx([1 / 3] * 3 + [1 / 2] * 2)
    assert attn.sampling_offsets.out_features == 4 * 5 * 2
    value = [torch.randn(2 * 4, 4, 8, 8), torch.randn(2 * 4, 4, 4, 4)]
    out = attn(torch.randn(2, 7, 16), torch.rand(2, 7, 1, 4), value, [(8, 8), (4, 4)])
    assert out.shape == (2, 7, 16)


def test_module_rejects_bad_arguments():
    with pytest.raises(ValueError, match="cross_attn_method"):
        MSDeformableAttention(16, 4, 2, 2, method="bicubic")
    with pytest.raises(ValueError, match="one count per level"):
        MSDeformableAttention(16, 4, 2, [1, 2, 3])

"""Fine-grained Distribution Refinement math."""

from __future__ import annotations

import torch

from dfine.model.fdr import distance2bbox, distribution_integral, weighting_function

UP = torch.tensor([0.5])


def test_weighting_function_values_for_reg_scale_4():
    w = weighting_function(32, UP, torch.tensor([4]))
    assert w.shape == (33,)
    assert w[16] == 0
    torch.testing.assert_close(w[[0, -1]], torch.tensor([-4.0, 4.0]))
    torch.testing.assert_close(w[[1, -2]], torch.tensor([-2.0, 2.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(w[[15, 17]], torch.tensor([-0.07599, 0.07599]), atol=1e-5, rtol=0)
    torch.testing.assert_close(w, -w.flip(0))  # symmetric
    assert torch.all(w[1:] > w[:-1])  # strictly increasing


def test_weighting_function_precise_matches_float32_path():
    for reg_scale in (4, 8):
        fast = weighting_function(32, UP, torch.tensor([reg_scale]))
        precise = weighting_function(32, UP, torch.tensor([reg_scale]), precise=True)
        assert precise.dtype == torch.float32
        torch.testing.assert_close(fast, precise, atol=2e-6, rtol=0)


def test_zero_distances_give_reference_box():
    ref = torch.tensor([[0.5, 0.4, 0.2, 0.3], [0.1, 0.9, 0.05, 0.1]])
    boxes = distance2bbox(ref, torch.zeros(2, 4), torch.tensor([4]))
    torch.testing.assert_close(boxes, ref)


def test_distance_moves_each_edge_independently():
    ref = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    reg_scale = torch.tensor([4])
    # left edge out by 1 unit = w / reg_scale = 0.05
    boxes = distance2bbox(ref, torch.tensor([[1.0, 0.0, 0.0, 0.0]]), reg_scale)
    torch.testing.assert_close(boxes, torch.tensor([[0.475, 0.5, 0.25, 0.4]]))


def test_integral_of_one_hot_logits_picks_bin_value():
    w = weighting_function(32, UP, torch.tensor([4]))
    logits = torch.full((1, 2, 4 * 33), -1e4)
    picks = [0, 16, 20, 32, 1, 15, 17, 31]
    for j, pick in enumerate(picks):
        q, edge = divmod(j, 4)
        logits[0, q, edge * 33 + pick] = 0
    dist = distribution_integral(logits, w, 32)
    assert dist.shape == (1, 2, 4)
    torch.testing.assert_close(dist.flatten(), w[picks])

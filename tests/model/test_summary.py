"""Parameter and FLOP counts against the official figures (fixtures README, paper table)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import dfine
from dfine.model.summary import count_flops, count_parameters, summarize

# official state_dict counts (random init) and the FlopCounterMode GFLOPs of the official deploy model
OFFICIAL = {
    "n": {"params": 3_782_693, "deploy_params": 3_753_799, "gflops": 7.314, "paper_gflops": 7.3},
    "s": {"params": 10_321_877, "deploy_params": 10_237_491, "gflops": 25.497, "paper_gflops": 25.5},
}


@pytest.mark.parametrize("size", ["n", "s"])
def test_counts_match_the_official_model(size):
    model = dfine.build_model(size)
    summary = summarize(model)
    expected = OFFICIAL[size]
    assert summary.params == expected["params"]
    assert summary.deploy_params == expected["deploy_params"]
    assert summary.gflops == pytest.approx(expected["gflops"], abs=5e-4)
    assert round(summary.gflops, 1) == expected["paper_gflops"]
    assert summary.image_size == 640


def test_count_flops_leaves_the_model_alone():
    model = dfine.build_model("n").train()
    keys_before = list(model.state_dict())
    gflops = count_flops(model, image_size=256)
    assert model.training
    assert list(model.state_dict()) == keys_before  # not deployed in place
    assert count_flops(model.deploy(), image_size=256) == gflops  # an already deployed model: same count


def test_attention_matmuls_are_counted():
    # CPU attention runs a fused kernel that FlopCounterMode has no formula for; summary supplies one
    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(32, 4, batch_first=True)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            tokens = images.flatten(2).transpose(1, 2)[..., :1].expand(-1, -1, 32)  # [1, L, 32]
            query = tokens + 1  # query != value: not the fused fast path of nn.MultiheadAttention
            return self.attn(query, query, tokens, need_weights=False)[0]

    length, dim = 8 * 8, 32
    projections = 4 * 2 * length * dim * dim  # q, k, v, out projections
    attention = 2 * 2 * length * length * dim  # Q K^T and A V
    assert count_flops(Attention(), image_size=8) * 1e9 == pytest.approx(projections + attention)


def test_count_parameters_counts_shared_parameters_once():
    layer = nn.Linear(3, 4)
    model = nn.Sequential(layer, layer)
    assert count_parameters(model) == 16

"""Localization Quality Estimator (LQE).

The top-k probabilities of each edge distribution (plus their mean) say how sure the box is; a small
MLP turns these ``4 * (k + 1)`` statistics into one score that is added to every class logit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import MLP

__all__ = ["LQE"]


class LQE(nn.Module):
    """``scores [B, Q, C]`` + MLP(top-k stats of ``corners [B, Q, 4 * (reg_max + 1)]``) -> ``[B, Q, C]``."""

    def __init__(self, k: int = 4, hidden_dim: int = 64, num_layers: int = 2, reg_max: int = 32) -> None:
        super().__init__()
        self.k = k
        self.reg_max = reg_max
        self.reg_conf = MLP(4 * (k + 1), hidden_dim, 1, num_layers)
        nn.init.constant_(self.reg_conf.layers[-1].bias, 0)
        nn.init.constant_(self.reg_conf.layers[-1].weight, 0)

    def forward(self, scores: torch.Tensor, pred_corners: torch.Tensor) -> torch.Tensor:
        batch, num_queries, _ = pred_corners.shape
        probs = F.softmax(pred_corners.reshape(batch, num_queries, 4, self.reg_max + 1), dim=-1)
        top_probs, _ = probs.topk(self.k, dim=-1)
        stats = torch.cat([top_probs, top_probs.mean(dim=-1, keepdim=True)], dim=-1)
        return scores + self.reg_conf(stats.reshape(batch, num_queries, -1))

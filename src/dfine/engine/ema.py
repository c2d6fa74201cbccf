"""Exponential moving average of the model weights (parameters and floating buffers)."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

__all__ = ["ModelEMA", "unwrap_model"]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel wrappers."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel) else model


class ModelEMA:
    """EMA with the official warm-up ramp ``decay_t = decay * (1 - exp(-t / warmups))``.

    Args:
        model: the trained model (wrapped or not); a frozen eval-mode copy is kept in ``module``.
        decay: final decay (official 0.9999).
        warmups: ramp length in updates (official 1000 or 2000).
        start: number of ``update`` calls to skip before averaging starts.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmups: int = 1000, start: int = 0) -> None:
        self.module = copy.deepcopy(unwrap_model(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.warmups = warmups
        self.start = start
        self.before_start = 0
        self.updates = 0

    def current_decay(self) -> float:
        return self.decay * (1 - math.exp(-self.updates / self.warmups))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        if self.before_start < self.start:
            self.before_start += 1
            return
        self.updates += 1
        d = self.current_decay()
        source = unwrap_model(model).state_dict()
        for key, value in self.module.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(source[key].detach(), alpha=1 - d)

    def restart(self, decay: float) -> None:
        """Continue averaging with a new final decay (the stage-2 restart of the official recipe)."""
        self.decay = decay

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        self.module.load_state_dict(state["module"], strict=strict)
        self.updates = state.get("updates", self.updates)
        self.decay = state.get("decay", self.decay)

"""Optimizer with regex parameter groups, and the learning-rate schedules of the official configs."""

from __future__ import annotations

import math
import re
from typing import Any

import torch
from torch import nn

from ..config.schema import ParamGroupSpec

__all__ = [
    "build_param_groups",
    "build_optimizer",
    "LinearWarmup",
    "FlatCosineSchedule",
    "build_lr_scheduler",
]


def build_param_groups(model: nn.Module, specs: list[ParamGroupSpec]) -> list[dict[str, Any]]:
    """Split the trainable parameters into groups by name patterns, in the order of ``specs``.

    Parameters that no pattern matches form a last group with the optimizer defaults. A parameter
    matched by two patterns is an error (the official configs use disjoint patterns). Note the
    official pattern ``(?!.*norm|bn)`` only excludes names *starting* with ``bn``; it is applied as
    written, so results equal the official optimizer's.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    owner: dict[str, int] = {}
    groups = []
    for index, spec in enumerate(specs):
        try:
            regex = re.compile(spec.pattern)
        except re.error as err:
            raise ValueError(f"optimizer.params[{index}].params: invalid regex {spec.pattern!r} ({err})") from None
        members = []
        for name, param in named:
            if regex.search(name):
                if name in owner:
                    raise ValueError(
                        f"optimizer.params[{index}] pattern {spec.pattern!r} also matches {name!r}, already in "
                        f"group {owner[name]}; make the patterns disjoint"
                    )
                owner[name] = index
                members.append(param)
        groups.append({"params": members, **spec.options})
    rest = [p for n, p in named if n not in owner]
    if rest:
        groups.append({"params": rest})
    return groups


def build_optimizer(
    model: nn.Module,
    name: str = "AdamW",
    lr: float = 1e-4,
    weight_decay: float = 1e-4,
    betas: tuple[float, float] = (0.9, 0.999),
    momentum: float = 0.9,
    groups: list[ParamGroupSpec] | None = None,
) -> torch.optim.Optimizer:
    """``AdamW`` (official), ``Adam`` or ``SGD`` over the regex parameter groups."""
    param_groups = build_param_groups(model, groups or [])
    if name == "AdamW":
        return torch.optim.AdamW(param_groups, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    if name == "Adam":
        return torch.optim.Adam(param_groups, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    if name == "SGD":
        return torch.optim.SGD(param_groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"optimizer.type {name!r} is not supported; use AdamW, Adam or SGD")


class LinearWarmup:
    """Per-iteration linear LR warm-up: factor ``min(1, (step + 1) / duration)`` of each group's LR.

    Stepped once per iteration; the epoch scheduler steps only after the warm-up has finished.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_duration: int, last_step: int = -1) -> None:
        self.optimizer = optimizer
        self.warmup_end_values = [group["lr"] for group in optimizer.param_groups]
        self.warmup_duration = warmup_duration
        self.last_step = last_step
        self.step()

    def step(self) -> None:
        self.last_step += 1
        if self.last_step >= self.warmup_duration:
            return
        factor = min(1.0, (self.last_step + 1) / self.warmup_duration)
        for group, end in zip(self.optimizer.param_groups, self.warmup_end_values):
            group["lr"] = factor * end

    def finished(self) -> bool:
        return self.last_step >= self.warmup_duration

    def state_dict(self) -> dict[str, Any]:
        return {
            "warmup_end_values": list(self.warmup_end_values),
            "warmup_duration": self.warmup_duration,
            "last_step": self.last_step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.warmup_end_values = list(state["warmup_end_values"])
        self.warmup_duration = state["warmup_duration"]
        self.last_step = state["last_step"]


class FlatCosineSchedule(torch.optim.lr_scheduler.LRScheduler):
    """Per-iteration schedule: linear warm-up, flat until ``flat_iters``, cosine decay to
    ``lr_gamma * lr`` until ``total_iters - no_aug_iters``, then flat (D-FINE's ``flatcosine``)."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_iters: int,
        warmup_iters: int,
        flat_iters: int,
        no_aug_iters: int,
        lr_gamma: float = 0.5,
        last_epoch: int = -1,
    ) -> None:
        self.total_iters = total_iters
        self.warmup_iters = warmup_iters
        self.flat_iters = flat_iters
        self.no_aug_iters = no_aug_iters
        self.lr_gamma = lr_gamma
        super().__init__(optimizer, last_epoch)

    def _factor(self, it: int) -> float:
        if it < self.warmup_iters:
            return ((it + 1) / self.warmup_iters) ** 2
        if it < self.flat_iters:
            return 1.0
        decay_end = self.total_iters - self.no_aug_iters
        if it >= decay_end:
            return self.lr_gamma
        progress = (it - self.flat_iters) / max(1, decay_end - self.flat_iters)
        return self.lr_gamma + 0.5 * (1 - self.lr_gamma) * (1 + math.cos(math.pi * progress))

    def get_lr(self) -> list[float]:
        factor = self._factor(self.last_epoch)
        return [base * factor for base in self.base_lrs]


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer, name: str = "MultiStepLR", **options: Any
) -> torch.optim.lr_scheduler.LRScheduler:
    """Epoch schedulers of the official configs: ``MultiStepLR`` (milestones, gamma) or ``CosineAnnealingLR``."""
    if name == "MultiStepLR":
        return torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=list(options.get("milestones", [1000])), gamma=options.get("gamma", 0.1)
        )
    if name == "CosineAnnealingLR":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=options.get("T_max", 100), eta_min=options.get("eta_min", 0.0)
        )
    raise ValueError(f"lr_scheduler.type {name!r} is not supported; use MultiStepLR or CosineAnnealingLR")

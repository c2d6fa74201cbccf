"""Builders of the public API: a model of a given size, the official criterion."""

from __future__ import annotations

from typing import Any

from .config.presets import model_config
from .losses.criterion import DFINECriterion
from .losses.matcher import HungarianMatcher
from .model.dfine import DFINE as DFINEModel

__all__ = ["build_model", "build_criterion"]


def build_model(size: str, num_classes: int = 80, **overrides: Any) -> DFINEModel:
    """A D-FINE model of ``size`` (n, s, m, l, x) with random weights.

    ``overrides`` change preset fields (see :func:`dfine.model_config`), e.g.
    ``build_model("n", num_classes=3, eval_spatial_size=(320, 320))``.
    """
    return DFINEModel.from_config(model_config(size, num_classes=num_classes, **overrides))


def build_criterion(num_classes: int = 80, **overrides: Any) -> DFINECriterion:
    """The official D-FINE criterion (VFL + L1 + GIoU + FGL + DDF, Hungarian matcher 2/5/2).

    ``overrides``: ``weight_dict`` (e.g. ``{"loss_vfl": 1, "loss_bbox": 5, ...}``), ``losses``,
    ``alpha``, ``gamma``, ``reg_max``, and ``matcher`` (a dict of :class:`HungarianMatcher` arguments).
    """
    matcher_args = dict(overrides.pop("matcher", {}) or {})
    weights = overrides.pop("weight_dict", None)
    allowed = {"losses", "alpha", "gamma", "reg_max"}
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ValueError(f"unknown criterion option {unknown[0]!r}; valid: weight_dict, matcher, {sorted(allowed)}")
    if "losses" in overrides:
        overrides["losses"] = tuple(overrides["losses"])
    try:
        matcher = HungarianMatcher(**matcher_args)
    except TypeError as err:
        raise ValueError(f"bad matcher option: {err}") from None
    return DFINECriterion(matcher=matcher, weights=weights, num_classes=num_classes, **overrides)

"""dfine: D-FINE real-time object detection (Fine-grained Distribution Refinement), in plain PyTorch.

Weight-compatible with the official checkpoints::

    import dfine
    model = dfine.build_model("s")
    dfine.load_checkpoint(model, "dfine_s_coco.pth")
    outputs = model.eval()(images)          # pred_logits [B, 300, 80], pred_boxes [B, 300, 4]
    detections = dfine.PostProcessor()(outputs, orig_sizes_wh)
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .config.presets import MODEL_PRESETS, ModelConfig, available_sizes, model_config
from .engine.checkpoint import CheckpointError, LoadReport, load_checkpoint
from .losses.criterion import DFINECriterion, LossWeights
from .losses.matcher import HungarianMatcher
from .model.dfine import DFINE as DFINEModel
from .model.postprocess import PostProcessor

__version__ = "0.1.0"

__all__ = [
    "MODEL_PRESETS",
    "CheckpointError",
    "DFINECriterion",
    "HungarianMatcher",
    "LossWeights",
    "DFINEModel",
    "LoadReport",
    "ModelConfig",
    "PostProcessor",
    "available_sizes",
    "build_criterion",
    "build_model",
    "load_checkpoint",
    "model_config",
]


def build_model(size: str, num_classes: int = 80, **overrides: Any) -> nn.Module:
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


# High-level inference, image loading and model summaries (after build_model: they use the subpackages).
from .config.yaml_model import load_model_config  # noqa: E402
from .data.images import list_images, load_image  # noqa: E402
from .model.summary import ModelSummary, count_flops, count_parameters, summarize  # noqa: E402
from .predictor import DFINE, Prediction, RandomWeightsWarning, infer_model_size  # noqa: E402

__all__ += [
    "DFINE",
    "ModelSummary",
    "Prediction",
    "RandomWeightsWarning",
    "count_flops",
    "count_parameters",
    "infer_model_size",
    "list_images",
    "load_image",
    "load_model_config",
    "summarize",
]

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
from .model.dfine import DFINE as DFINEModel
from .model.postprocess import PostProcessor

__version__ = "0.1.0"

__all__ = [
    "MODEL_PRESETS",
    "CheckpointError",
    "DFINEModel",
    "LoadReport",
    "ModelConfig",
    "PostProcessor",
    "available_sizes",
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

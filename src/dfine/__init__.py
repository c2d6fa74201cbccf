"""dfine: D-FINE real-time object detection (Fine-grained Distribution Refinement), in plain PyTorch.

Weight-compatible with the official checkpoints::

    import dfine
    model = dfine.build_model("s")
    dfine.load_checkpoint(model, "dfine_s_coco.pth")
    outputs = model.eval()(images)          # pred_logits [B, 300, 80], pred_boxes [B, 300, 4]
    detections = dfine.PostProcessor()(outputs, orig_sizes_wh)

    detector = dfine.DFINE.from_checkpoint("dfine_s_coco.pth")   # high level: paths, PIL, arrays
    predictions = detector.predict("street.jpg")
"""

from __future__ import annotations

from .builders import build_criterion, build_model
from .config.presets import MODEL_PRESETS, ModelConfig, available_sizes, model_config
from .config.yaml_model import load_model_config
from .data.images import list_images, load_image
from .engine.checkpoint import CheckpointError, LoadReport, infer_model_size, load_checkpoint
from .losses.criterion import DFINECriterion, LossWeights
from .losses.matcher import HungarianMatcher
from .model.dfine import DFINE as DFINEModel
from .model.postprocess import PostProcessor
from .model.summary import ModelSummary, count_flops, count_parameters, summarize
from .predictor import DFINE, Prediction, RandomWeightsWarning

__version__ = "0.1.0"

__all__ = [
    "DFINE",
    "MODEL_PRESETS",
    "CheckpointError",
    "DFINECriterion",
    "DFINEModel",
    "HungarianMatcher",
    "LoadReport",
    "LossWeights",
    "ModelConfig",
    "ModelSummary",
    "PostProcessor",
    "Prediction",
    "RandomWeightsWarning",
    "available_sizes",
    "build_criterion",
    "build_model",
    "count_flops",
    "count_parameters",
    "infer_model_size",
    "list_images",
    "load_checkpoint",
    "load_image",
    "load_model_config",
    "model_config",
    "summarize",
]

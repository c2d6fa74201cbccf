"""dfine: D-FINE real-time object detection (Fine-grained Distribution Refinement), in plain PyTorch.

Weight-compatible with the official checkpoints::

    import dfine
    detector = dfine.DFINE.from_pretrained("dfine-s-coco")   # zoo name, URL, .pth, HF folder
    predictions = detector.predict("street.jpg")              # paths, folders, PIL, arrays

    model, info = dfine.load_model("dfine_s_coco.pth")        # train-layout model + ModelInfo
    outputs = model(images)                 # DFINEOutputs: logits [B, 300, 80], boxes [B, 300, 4]
    detections = dfine.PostProcessor()(outputs, orig_sizes_wh)

On the CPU, ``dfine.keep_freed_memory()`` once per process saves the page faults of each forward
(``dfine.memory``; the ``dfine predict`` / ``track`` commands do it for their runs).
"""

from __future__ import annotations

from .builders import build_criterion, build_model
from .config.presets import MODEL_PRESETS, ModelConfig, available_sizes, model_config
from .config.yaml_model import load_model_config
from .data.images import list_images, load_image
from .engine.checkpoint import CheckpointError, LoadReport, infer_model_size
from .hub.zoo import available_weights
from .loading import load_checkpoint, load_model
from .losses.criterion import DFINECriterion, LossWeights
from .losses.matcher import HungarianMatcher
from .memory import keep_freed_memory
from .model.dfine import DFINE as DFINEModel
from .model.outputs import DFINEOutputs, HeadOutputs
from .model.postprocess import PostProcessor
from .model.summary import ModelSummary, count_flops, count_parameters, summarize
from .model_info import ModelInfo, RandomWeightsWarning
from .prediction import Prediction
from .predictor import DFINE

__version__ = "0.1.0"

__all__ = [
    "DFINE",
    "MODEL_PRESETS",
    "CheckpointError",
    "DFINECriterion",
    "DFINEModel",
    "DFINEOutputs",
    "HeadOutputs",
    "HungarianMatcher",
    "LoadReport",
    "LossWeights",
    "ModelConfig",
    "ModelInfo",
    "ModelSummary",
    "PostProcessor",
    "Prediction",
    "RandomWeightsWarning",
    "available_sizes",
    "available_weights",
    "build_criterion",
    "build_model",
    "count_flops",
    "count_parameters",
    "infer_model_size",
    "keep_freed_memory",
    "list_images",
    "load_checkpoint",
    "load_image",
    "load_model",
    "load_model_config",
    "model_config",
    "summarize",
]

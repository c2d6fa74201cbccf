"""The exported graph: D-FINE in inference form followed by its post-processor.

``DeployModel(images, orig_target_sizes) -> (labels, boxes, scores)`` has the inputs, outputs and
meaning of the official ``tools/deployment/export_onnx.py`` model, so files exported from it drop
into code written for the official ones:

* ``images`` float32 ``[N, 3, S, S]``: RGB in [0, 1], the image squash-resized to ``S x S``
  (:func:`dfine.data.images.to_model_input`);
* ``orig_target_sizes`` int64 ``[N, 2]``: each original image's (width, height) in pixels;
* ``labels`` int64 ``[N, K]``: class indices ``0..C-1`` (not COCO category ids);
* ``boxes`` float32 ``[N, K, 4]``: xyxy in original-image pixels (not clipped);
* ``scores`` float32 ``[N, K]``: sigmoid confidences, best first.

It is a module of its own, not a flag on the model, so the model's return type never changes.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from ..config.presets import ModelConfig, model_config
from ..config.schema import load_train_config
from ..engine.checkpoint import (
    SCORE_HEAD_KEY,
    CheckpointError,
    extract_state_dict,
    infer_model_size,
    load_checkpoint,
    preset_config_for,
    read_checkpoint,
)
from ..model.dfine import DFINE as DFINEModel
from ..model.postprocess import PostProcessor
from ..predictor import RandomWeightsWarning
from .metadata import ModelMetadata

__all__ = ["DeployModel", "load_deploy_model", "INPUT_NAMES", "OUTPUT_NAMES"]

INPUT_NAMES: tuple[str, str] = ("images", "orig_target_sizes")
OUTPUT_NAMES: tuple[str, str, str] = ("labels", "boxes", "scores")
_DEFAULT_IMAGE_SIZE = 640  # when the config leaves eval_spatial_size unset


class DeployModel(nn.Module):
    """A deployed D-FINE and its post-processor as one module (contract: module docstring).

    Args:
        model: the detector in inference form (``model.deploy()`` already called).
        postprocessor: turns the model outputs into the top-K detections.
    """

    def __init__(self, model: DFINEModel, postprocessor: PostProcessor) -> None:
        super().__init__()
        if model.training:
            raise ValueError("DeployModel needs the model in inference form: call model.deploy() first")
        if postprocessor.num_classes != model.num_classes:
            raise ValueError(
                f"the post-processor decodes {postprocessor.num_classes} classes but the model has "
                f"{model.num_classes}; build PostProcessor(num_classes={model.num_classes})"
            )
        self.model = model
        self.postprocessor = postprocessor

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    def forward(
        self, images: torch.Tensor, orig_target_sizes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(labels [N, K], boxes [N, K, 4], scores [N, K])`` for ``images [N, 3, S, S]``."""
        return self.postprocessor.decode(self.model(images), orig_target_sizes)


def _image_size(cfg: ModelConfig) -> int:
    """Side of the square input the model's anchors and position embeddings are built for."""
    size = cfg.decoder.eval_spatial_size
    if size is None:
        return _DEFAULT_IMAGE_SIZE
    height, width = size
    if height != width:
        raise ValueError(
            f"eval_spatial_size {list(size)} is not square; the export and inference tools take square "
            "inputs (the official resize), so set eval_spatial_size: [S, S]"
        )
    return int(height)


def _config_from_checkpoint(checkpoint: Path, size: str | None) -> ModelConfig:
    """The preset model a checkpoint's weights fit (size inferred unless given), with its class count."""
    state, _ = extract_state_dict(read_checkpoint(checkpoint), checkpoint)
    return preset_config_for(state, checkpoint, size, "pass the training config with -c CONFIG")


def _load_strict(model: DFINEModel, checkpoint: Path, built_from: str) -> None:
    """Load every tensor or raise one CheckpointError that says what differs and which size the file is."""
    report = load_checkpoint(model, checkpoint, strict=False)
    if not (report.mismatched or report.missing or report.unexpected):
        return
    example = ""
    if report.mismatched:
        key, (in_file, in_model) = next(iter(report.mismatched.items()))
        example = f" (e.g. {key}: {list(in_file)} in the file, {list(in_model)} in the model)"
    state, _ = extract_state_dict(read_checkpoint(checkpoint), checkpoint)
    size = infer_model_size(state)
    looks_like = f"; the checkpoint looks like D-FINE-{size.upper()}" if size else ""
    classes = f" with {state[SCORE_HEAD_KEY].shape[0]} classes" if size and SCORE_HEAD_KEY in state else ""
    raise CheckpointError(
        f"{checkpoint} does not fit the model of {built_from}: {len(report.mismatched)} tensors of another "
        f"shape{example}, {len(report.missing)} missing and {len(report.unexpected)} unexpected keys"
        f"{looks_like}{classes}. Pass the config the checkpoint was trained with (-c)."
    )


def load_deploy_model(
    config: str | Path | None = None,
    checkpoint: str | Path | None = None,
    *,
    size: str | None = None,
    updates: list[str] | None = None,
) -> tuple[DeployModel, ModelMetadata]:
    """Build the exported module from a config and/or a checkpoint, on the CPU, in eval mode.

    Args:
        config: an official-style YAML (``-c``); it sets the model, ``num_top_queries`` and the
            input size (``eval_spatial_size``).
        checkpoint: official or dfine checkpoint (``-r``); EMA weights win. Loaded strictly: weights
            that do not fit the config raise :class:`~dfine.engine.checkpoint.CheckpointError`
            naming the keys (and the size they look like). Without a config, the size and class
            count come from the weights.
        size: the preset size when there is no config (inferred from ``checkpoint`` if None).
        updates: ``-u KEY=VALUE`` overrides of the config.

    Returns:
        The :class:`DeployModel` and its :class:`ModelMetadata`. Without a checkpoint the weights are
        RANDOM (with a :class:`~dfine.predictor.RandomWeightsWarning`): useful for timing only.
    """
    num_top_queries = 300
    if config is not None:
        train_cfg = load_train_config(config, updates)
        cfg, num_top_queries = train_cfg.model, train_cfg.num_top_queries
    elif checkpoint is not None:
        cfg = _config_from_checkpoint(Path(checkpoint), size)
    elif size is not None:
        cfg = model_config(size)
    else:
        raise ValueError("give a config (-c CONFIG), a checkpoint (-r CHECKPOINT), or a model size")
    model = DFINEModel.from_config(cfg)
    if checkpoint is not None:
        _load_strict(model, Path(checkpoint), f"config {config}" if config is not None else f"D-FINE-{size or '?'}")
    else:
        warnings.warn(
            "no checkpoint given: the exported model has RANDOM weights, so its detections are meaningless "
            "(fine for timing); pass -r CHECKPOINT",
            RandomWeightsWarning,
            stacklevel=2,
        )
    postprocessor = PostProcessor(num_classes=cfg.num_classes, num_top_queries=num_top_queries)
    deployed = DeployModel(model.deploy(), postprocessor).eval()
    metadata = ModelMetadata.for_classes(cfg.num_classes, _image_size(cfg), num_top_queries)
    return deployed, metadata

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
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from ..config.presets import model_config
from ..config.schema import load_train_config
from ..engine.checkpoint import SCORE_HEAD_KEY, CheckpointError, infer_model_size, load_state_dict
from ..loading import config_difference, read_model_weights, resolve_weights
from ..model.dfine import DFINE as DFINEModel
from ..model.postprocess import PostProcessor
from ..model_info import ModelInfo, RandomWeightsWarning
from .metadata import ModelMetadata

__all__ = ["DeployModel", "load_deploy_model", "model_from_checkpoint", "INPUT_NAMES", "OUTPUT_NAMES"]

INPUT_NAMES: tuple[str, str] = ("images", "orig_target_sizes")
OUTPUT_NAMES: tuple[str, str, str] = ("labels", "boxes", "scores")


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


CONFIG_FIX = "pass the config the checkpoint was trained with (-c CONFIG)"  # for commands that take -c


def _load_strict(model: DFINEModel, state: dict[str, torch.Tensor], checkpoint: str, built_from: str, fix: str) -> None:
    """Load every tensor or raise one CheckpointError that says what differs and which size the file is."""
    report = load_state_dict(model, state, checkpoint, strict=False)
    if not (report.mismatched or report.missing or report.unexpected):
        return
    example = ""
    if report.mismatched:
        key, (in_file, in_model) = next(iter(report.mismatched.items()))
        example = f" (e.g. {key}: {list(in_file)} in the file, {list(in_model)} in the model)"
    size = infer_model_size(state)
    looks_like = f"; the checkpoint looks like D-FINE-{size.upper()}" if size else ""
    classes = f" with {state[SCORE_HEAD_KEY].shape[0]} classes" if size and SCORE_HEAD_KEY in state else ""
    raise CheckpointError(
        f"{checkpoint} does not fit the model of {built_from}: {len(report.mismatched)} tensors of another "
        f"shape{example}, {len(report.missing)} missing and {len(report.unexpected)} unexpected keys"
        f"{looks_like}{classes}; {fix}"
    )


def model_from_checkpoint(
    checkpoint: str | Path,
    config: str | Path | None,
    size: str | None,
    updates: list[str] | None,
    fix: str = CONFIG_FIX,
) -> tuple[DFINEModel, ModelInfo]:
    """The model of a checkpoint; with a config, the config's model (a dfine checkpoint must agree with it).

    ``fix`` ends the error for weights that fit no preset: what the calling command's user can do.
    """
    state, info = read_model_weights(resolve_weights(checkpoint), size, fix)
    if config is not None:
        train_cfg = load_train_config(config, updates)
        if info.weights_format in ("dfine", "hf"):
            difference = config_difference(info.config, train_cfg.model)
            if difference is not None:
                raise CheckpointError(
                    f"{checkpoint} holds its own model config, and {config} differs from it ({difference}, "
                    "checkpoint vs config); drop -c to use the checkpoint's, or pass the config it was trained with"
                )
            info = replace(info, num_top_queries=train_cfg.num_top_queries)
        else:  # weights only: the config says what they are (the official tools' behaviour)
            info = ModelInfo.for_config(
                train_cfg.model,
                size=infer_model_size(state),
                num_top_queries=train_cfg.num_top_queries,
                source=str(checkpoint),
                weights_format=info.weights_format,
            )
    model = DFINEModel.from_config(info.config)
    _load_strict(model, state, str(checkpoint), f"config {config}" if config is not None else "its size", fix)
    return model, info


def load_deploy_model(
    config: str | Path | None = None,
    checkpoint: str | Path | None = None,
    *,
    size: str | None = None,
    updates: list[str] | None = None,
    fix: str = CONFIG_FIX,
) -> tuple[DeployModel, ModelMetadata]:
    """Build the exported module from a config and/or a checkpoint, on the CPU, in eval mode.

    Args:
        config: an official-style YAML (``-c``); it sets the model, ``num_top_queries`` and the
            input size (``eval_spatial_size``). A dfine checkpoint holds its own config: one that
            differs from it is refused, naming the difference.
        checkpoint: any weights source of :func:`dfine.load_model` (a path, URL, zoo name, HF
            folder); EMA weights win. Loaded strictly: weights that do not fit raise
            :class:`~dfine.engine.checkpoint.CheckpointError` naming the keys (and the size they
            look like). Without a config, the model and class names come from the checkpoint.
        size: the preset size when there is no config (inferred from ``checkpoint`` if None).
        updates: ``-u KEY=VALUE`` overrides of the config.
        fix: the end of the error for weights that fit no preset (the calling command's remedy).

    Returns:
        The :class:`DeployModel` and its :class:`ModelMetadata` (class names, category ids, input
        size). Without a checkpoint the weights are RANDOM (with a
        :class:`~dfine.model_info.RandomWeightsWarning`): useful for timing only.
    """
    if checkpoint is not None:
        model, info = model_from_checkpoint(checkpoint, config, size, updates, fix)
    else:
        if config is not None:
            train_cfg = load_train_config(config, updates)
            info = ModelInfo.for_config(train_cfg.model, num_top_queries=train_cfg.num_top_queries)
        elif size is not None:
            info = ModelInfo.for_config(model_config(size), size=size)
        else:
            raise ValueError("give a config (-c CONFIG), a checkpoint (-r CHECKPOINT), or a model size")
        model = DFINEModel.from_config(info.config)
        warnings.warn(
            "no checkpoint given: the exported model has RANDOM weights, so its detections are meaningless "
            "(fine for timing); pass -r CHECKPOINT",
            RandomWeightsWarning,
            stacklevel=2,
        )
    postprocessor = PostProcessor(num_classes=info.num_classes, num_top_queries=info.num_top_queries)
    deployed = DeployModel(model.deploy(), postprocessor).eval()
    return deployed, ModelMetadata.from_info(info)

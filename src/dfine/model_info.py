"""What is known about a loaded detector, and the small choices every inference path shares.

:class:`ModelInfo` travels with a model from :func:`dfine.load_model` to every entry point (the
high-level :class:`dfine.DFINE`, the deploy backends, exported files), so class names, the
dataset's category ids and the input size are never lost on the way. This module sits below both
the high-level API and :mod:`dfine.deploy`; it imports neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from .categories import COCO_CATEGORY_IDS, COCO_CLASS_NAMES
from .config.presets import ModelConfig

__all__ = [
    "ModelInfo",
    "RandomWeightsWarning",
    "default_category_ids",
    "default_class_names",
    "resolve_device",
    "square_input_size",
]

DEFAULT_IMAGE_SIZE = 640  # the official models' input side, when a config leaves eval_spatial_size unset


class RandomWeightsWarning(UserWarning):
    """A detector was built without trained weights, so its detections are meaningless."""


def default_class_names(num_classes: int) -> list[str]:
    """The 80 COCO names for an 80-class model, else ``class_0 .. class_{num_classes-1}``."""
    if num_classes == len(COCO_CLASS_NAMES):
        return list(COCO_CLASS_NAMES)
    return [f"class_{i}" for i in range(num_classes)]


def default_category_ids(class_names: Sequence[str]) -> list[int]:
    """COCO's category ids for the 80 COCO names (the official ``remap_mscoco_category``), else ``0..C-1``."""
    if tuple(class_names) == COCO_CLASS_NAMES:
        return list(COCO_CATEGORY_IDS)
    return list(range(len(class_names)))


def square_input_size(config: ModelConfig, source: str = "the model config") -> int:
    """Side of the square input a model's anchors are built for (``eval_spatial_size``; 640 if unset).

    Raises:
        ValueError: a non-square ``eval_spatial_size`` (inference and export take square inputs).
    """
    size = config.decoder.eval_spatial_size
    if size is None:
        return DEFAULT_IMAGE_SIZE
    height, width = size
    if height != width:
        raise ValueError(
            f"{source}: eval_spatial_size {list(size)} is not square; inference and export take square inputs "
            "(the official resize), so set eval_spatial_size: [S, S]"
        )
    return int(height)


@dataclass(frozen=True)
class ModelInfo:
    """Facts about a detector that its weights alone do not say.

    Attributes:
        size: the preset size (``n`` ... ``x``), or None for a layout no preset has.
        class_names: one name per class label ``0..C-1``.
        category_ids: the dataset's category id of each label (COCO results use these).
        image_size: side in pixels of the square input the model was built for.
        num_queries: decoder queries.
        num_top_queries: detections per image after post-processing (K).
        source: where the weights came from (a path, URL, zoo name, or ``random weights``).
        config: the full model architecture.
        weights_format: ``random``, ``dfine`` (a training checkpoint holding its config and classes),
            ``official`` (weights only; size inferred) or ``hf`` (a transformers checkpoint).
    """

    size: str | None
    class_names: tuple[str, ...]
    category_ids: tuple[int, ...]
    image_size: int
    num_queries: int
    config: ModelConfig
    num_top_queries: int = 300
    source: str = "random weights"
    weights_format: str = "random"

    def __post_init__(self) -> None:
        if len(self.class_names) != len(self.category_ids):
            raise ValueError(
                f"{len(self.class_names)} class names but {len(self.category_ids)} category ids; give one id per class"
            )
        if len(self.class_names) != self.config.num_classes:
            raise ValueError(
                f"{len(self.class_names)} class names for a model with {self.config.num_classes} classes; "
                "give one name per class"
            )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @classmethod
    def for_config(
        cls,
        config: ModelConfig,
        *,
        size: str | None = None,
        class_names: Sequence[str] | None = None,
        category_ids: Sequence[int] | None = None,
        num_top_queries: int = 300,
        source: str = "random weights",
        weights_format: str = "random",
    ) -> ModelInfo:
        """Info for ``config``, with the default names / ids where none are given."""
        names = list(class_names) if class_names is not None else default_class_names(config.num_classes)
        ids = list(category_ids) if category_ids is not None else default_category_ids(names)
        return cls(
            size=size,
            class_names=tuple(str(name) for name in names),
            category_ids=tuple(int(i) for i in ids),
            image_size=square_input_size(config, source),
            num_queries=config.decoder.num_queries,
            config=config,
            num_top_queries=num_top_queries,
            source=source,
            weights_format=weights_format,
        )

    def with_class_names(self, class_names: Sequence[str]) -> ModelInfo:
        """The same info with other names (the category ids stay)."""
        if len(class_names) != self.num_classes:
            raise ValueError(
                f"class_names has {len(class_names)} names but the model has {self.num_classes} classes; "
                "pass one name per class"
            )
        return replace(self, class_names=tuple(str(name) for name in class_names))


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a ``torch.device``; None picks CUDA when available, else the CPU.

    Raises:
        ValueError: an unknown device name, or CUDA / MPS asked for where it is not available.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"unknown device {device!r} ({err}); use 'cpu', 'cuda' or 'cuda:N'") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available here; use device 'cpu'")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} asked for, but MPS is not available here; use device 'cpu'")
    return resolved

"""What an exported model file says about itself: class names, category ids, input size, detections per image.

ONNX files carry it as ``metadata_props`` and OpenVINO IR as ``rt_info`` (both under ``dfine.*``
keys, string values); a TensorRT engine has no such slot, so :mod:`dfine.deploy.tensorrt` writes it
to a ``<engine>.json`` file beside the engine. Files without it (the official exports) still run:
the runtimes then read the input size from the graph and name classes as
:func:`dfine.model_info.default_class_names` does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..model_info import ModelInfo, default_category_ids, default_class_names

__all__ = ["ModelMetadata", "METADATA_KEYS", "METADATA_PREFIX"]

METADATA_PREFIX = "dfine."  # key prefix in ONNX metadata_props / OpenVINO rt_info
METADATA_KEYS = ("class_names", "image_size", "num_top_queries", "category_ids")  # after the prefix


@dataclass(frozen=True)
class ModelMetadata:
    """Facts about an exported detector that its graph does not hold.

    Attributes:
        class_names: one name per class label ``0..C-1``.
        image_size: side of the square model input in pixels.
        num_top_queries: detections per image (K) in the graph's outputs.
        category_ids: the dataset's category id of each label (COCO results); default COCO's ids
            for the 80 COCO names, else ``0..C-1``.
    """

    class_names: tuple[str, ...]
    image_size: int = 640
    num_top_queries: int = 300
    category_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.category_ids:
            object.__setattr__(self, "category_ids", tuple(default_category_ids(self.class_names)))
        if len(self.category_ids) != len(self.class_names):
            raise ValueError(f"{len(self.class_names)} class names but {len(self.category_ids)} category ids")

    @classmethod
    def from_info(cls, info: ModelInfo) -> ModelMetadata:
        """The part of a loaded model's :class:`~dfine.ModelInfo` an exported file carries."""
        return cls(info.class_names, info.image_size, info.num_top_queries, info.category_ids)

    @classmethod
    def for_classes(cls, num_classes: int, image_size: int = 640, num_top_queries: int = 300) -> ModelMetadata:
        """Metadata with the default names for ``num_classes`` (COCO names for 80)."""
        return cls(tuple(default_class_names(num_classes)), image_size, num_top_queries)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_strings(self) -> dict[str, str]:
        """``{"dfine.class_names": json, "dfine.image_size": "640", ...}`` for a model file."""
        return {
            f"{METADATA_PREFIX}class_names": json.dumps(list(self.class_names)),
            f"{METADATA_PREFIX}image_size": str(self.image_size),
            f"{METADATA_PREFIX}num_top_queries": str(self.num_top_queries),
            f"{METADATA_PREFIX}category_ids": json.dumps(list(self.category_ids)),
        }

    @classmethod
    def from_strings(cls, values: Mapping[str, str]) -> ModelMetadata | None:
        """Inverse of :meth:`to_strings`; None when the ``dfine.*`` keys are absent or unreadable."""
        try:
            names = json.loads(values[f"{METADATA_PREFIX}class_names"])
            image_size = int(values[f"{METADATA_PREFIX}image_size"])
            num_top = int(values.get(f"{METADATA_PREFIX}num_top_queries", "300"))
            ids = json.loads(values.get(f"{METADATA_PREFIX}category_ids", "[]"))
        except (KeyError, ValueError, TypeError):
            return None
        if not isinstance(names, Sequence) or not names:
            return None
        if not isinstance(ids, Sequence) or len(ids) != len(names):
            ids = []  # files written before category ids were stored: the defaults
        return cls(tuple(str(name) for name in names), image_size, num_top, tuple(int(i) for i in ids))

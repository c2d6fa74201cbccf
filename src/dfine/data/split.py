"""Where one split of a dataset is (:class:`DatasetLayout`), whatever the dataset's format.

The COCO, YOLO and VOC readers each return one; :mod:`dfine.data.layout` decides which reader a folder needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .check import Issue

__all__ = ["SPLIT_ALIASES", "DatasetLayout", "split_names"]

# Other names of a split used by exporters (Roboflow writes "valid").
SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "val": ("val", "valid", "validation"),
    "test": ("test",),
}


def split_names(split: str) -> tuple[str, ...]:
    """``split`` and the other names it goes by (``val``: ``valid``, ``validation``)."""
    return SPLIT_ALIASES.get(split, (split,))


@dataclass(frozen=True)
class DatasetLayout:
    """Where a split of a dataset folder is: its image folder and its COCO annotations (file or dict)."""

    kind: str  # "coco", "yolo" or "voc"
    img_folder: Path
    annotations: Path | dict[str, Any]
    issues: tuple[Issue, ...] = ()
    split: str = ""  # the name it was found under ("valid" for a Roboflow "val"); "" when not known

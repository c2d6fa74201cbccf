"""Which format a dataset is in, and where its splits are.

:func:`detect_layout` finds one split of a folder (YOLO ``data.yaml``, Pascal VOC, or COCO json in the README
layout, a Roboflow export or a few other placements); :func:`find_dataset` takes what a user points training at
(a folder, a YOLO data YAML or a COCO json) and finds its train and validation splits;
:func:`dataset_from_folder` reads a split as a :class:`~dfine.data.coco.CocoDetection`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import voc, yolo
from .coco import CocoDetection
from .images import IMAGE_EXTENSIONS
from .split import DatasetLayout, split_names

__all__ = [
    "YOLO_YAML_NAMES",
    "DatasetSplits",
    "dataset_from_folder",
    "detect_layout",
    "find_dataset",
    "guess_img_folder",
]

YOLO_YAML_NAMES = ("data.yaml", "data.yml", "dataset.yaml", "dataset.yml")


def _coco_candidates(root: Path, split: str) -> list[tuple[Path, Path]]:
    """(annotation file, image folder) pairs tried, in order, for a COCO-layout folder."""
    ann_dir = root / "annotations"
    return [
        (ann_dir / f"instances_{split}.json", root / "images" / split),
        (ann_dir / f"instances_{split}.json", root / split),
        (ann_dir / f"instances_{split}2017.json", root / f"{split}2017"),
        (ann_dir / f"{split}.json", root / "images" / split),
        (ann_dir / f"{split}.json", root / split),
        (root / split / "_annotations.coco.json", root / split),  # Roboflow export
        (root / f"{split}.json", root / "images" / split),
        (root / f"{split}.json", root / split),
    ]


def detect_layout(root: str | Path, split: str = "train") -> DatasetLayout:
    """Recognise a dataset folder's layout and locate ``split``.

    * YOLO: a ``data.yaml`` (``train:`` / ``val:`` image folders, ``names:``) at the top.
    * Pascal VOC: ``Annotations/`` (xml) and ``JPEGImages/``; splits from ``ImageSets/Main/{split}.txt``.
    * COCO: ``annotations/instances_{split}.json`` with ``images/{split}/`` (the README layout), or
      ``{split}/_annotations.coco.json`` (a Roboflow export), ``{split}.json`` and a few other common placements;
      ``val`` is also found as ``valid`` and ``validation``.

    Raises:
        FileNotFoundError: ``root`` is not a folder, or nothing for ``split`` was found (the message
            lists what was looked for).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    for name in YOLO_YAML_NAMES:
        if (root / name).is_file():
            return yolo.yolo_split_to_coco(root / name, split)
    if (root / "Annotations").is_dir() and (root / "JPEGImages").is_dir():
        return voc.voc_split_to_coco(root, split)
    tried = [(name, *pair) for name in split_names(split) for pair in _coco_candidates(root, name)]
    for name, ann, images in tried:
        if ann.is_file() and images.is_dir():
            return DatasetLayout("coco", images, ann, split=name)
    listing = "\n".join(f"  {a.relative_to(root)} + {i.relative_to(root)}/" for _, a, i in tried)
    raise FileNotFoundError(
        f"{root}: no '{split}' split found. Looked for a YOLO {' / '.join(YOLO_YAML_NAMES)}, a VOC "
        f"Annotations/ + JPEGImages/ pair, or COCO json + image folder as one of:\n{listing}"
    )


def dataset_from_folder(
    root: str | Path, split: str = "train", transforms: Callable[..., Any] | None = None, **kwargs: Any
) -> CocoDetection:
    """A split of a folder in COCO (json), YOLO (txt + data.yaml) or Pascal VOC (xml) layout, recognised by
    :func:`detect_layout`, read with no conversion step (``kwargs`` go to :class:`CocoDetection`)."""
    layout = detect_layout(root, split)
    return CocoDetection(layout.img_folder, layout.annotations, transforms, prior_issues=layout.issues, **kwargs)


def guess_img_folder(ann_file: Path) -> Path:
    """``x/annotations/instances_train.json`` -> ``x/images/train`` or ``x/train``; else the json's folder."""
    split = ann_file.stem.removeprefix("instances_")
    root = ann_file.parent.parent if ann_file.parent.name == "annotations" else ann_file.parent
    for candidate in (root / "images" / split, root / split, root / "images", ann_file.parent):
        if candidate.is_dir() and any(p.suffix.lower() in IMAGE_EXTENSIONS for p in candidate.iterdir()):
            return candidate
    raise FileNotFoundError(f"cannot guess the image folder of {ann_file}; put the images in {root / 'images'}")


@dataclass(frozen=True)
class DatasetSplits:
    """A dataset's training and validation splits, and how they were found.

    Attributes:
        source: what was given (folder, data YAML or COCO json).
        kind: ``coco``, ``roboflow`` (a COCO export with ``_annotations.coco.json``), ``yolo`` or ``voc``.
        train, val: the splits; ``val`` is the training split itself when the dataset has no other.
        val_split: the name the validation split was found under (``val``, ``valid``, ``test`` or ``train``).
    """

    source: Path
    kind: str
    train: DatasetLayout
    val: DatasetLayout
    val_split: str

    def describe(self) -> str:
        """One line for the run's log: format, where the splits are."""

        def where(layout: DatasetLayout) -> str:
            return str(layout.annotations) if isinstance(layout.annotations, Path) else str(layout.img_folder)

        val = "the training images (no validation split found)" if self.val_split == "train" else where(self.val)
        return f"{self.source}: {self.kind} dataset; train {where(self.train)}; val ({self.val_split}) {val}"


def _kind(layout: DatasetLayout) -> str:
    if isinstance(layout.annotations, Path) and layout.annotations.name == "_annotations.coco.json":
        return "roboflow"
    return layout.kind


def find_dataset(data: str | Path, val_split: str | None = None) -> DatasetSplits:
    """The train and validation splits of ``data``: a dataset folder (:func:`detect_layout`), a YOLO data YAML or
    a COCO json (its images guessed by :func:`guess_img_folder`; it serves as both splits).

    Validation is ``val_split`` when given (``val``, ``test``, ``train``...: an error if the dataset lacks it), else the
    ``val`` split (also named ``valid``/``validation``), else ``test``, else the training split.

    Raises:
        FileNotFoundError: ``data`` does not exist, or holds no training split (naming what was looked for).
        ValueError: a file that is neither a YAML nor a json.
    """
    source = Path(data)
    if not source.exists():
        raise FileNotFoundError(f"dataset not found: {source}; pass a dataset folder, a YOLO data.yaml or a COCO json")
    if source.is_file():
        suffix = source.suffix.lower()
        if suffix == ".json":
            layout = DatasetLayout("coco", guess_img_folder(source), source)
            return DatasetSplits(source, "coco", layout, layout, "train")
        if suffix not in (".yaml", ".yml"):
            raise ValueError(f"{source}: not a dataset; pass a dataset folder, a YOLO data.yaml or a COCO .json")

        def split_of(name: str) -> DatasetLayout:
            return yolo.yolo_split_to_coco(source, name)
    else:

        def split_of(name: str) -> DatasetLayout:
            return detect_layout(source, name)

    train = split_of("train")
    if val_split is not None:
        val = train if val_split == "train" else split_of(val_split)
        return DatasetSplits(source, _kind(train), train, val, val.split or val_split)
    for name in ("val", "test"):
        try:
            val = split_of(name)
        except FileNotFoundError:
            continue
        return DatasetSplits(source, _kind(train), train, val, val.split or name)
    return DatasetSplits(source, _kind(train), train, train, "train")

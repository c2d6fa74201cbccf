"""COCO-format detection dataset returning torchvision ``tv_tensors``, and its category <-> label map.

The model predicts contiguous labels ``0..C-1``; annotation files use category ids that need not be
contiguous or 0-based (COCO's 80 classes use ids 1..90 with gaps, a custom set may use {3, 7, 42}).
:class:`CategoryMap` is the one place that translates between the two. It is built by the dataset
(from the json's ``categories``, sorted by id, or the fixed MS-COCO table with
``remap_mscoco_category=True``), saved with checkpoints (:meth:`CategoryMap.to_dict`) and used to map
predictions back to category ids for evaluation (:meth:`CategoryMap.labels_to_category_ids`).

Behaviour kept from the official D-FINE ``CocoDetection``: boxes ``[x, y, w, h]`` become absolute
``xyxy`` clipped to the image, boxes without area are dropped, crowd annotations are not training
targets, images without annotations stay in the set as negatives, ``orig_size`` is ``(w, h)``.
Unlike the official code, labels are always contiguous, so ``num_classes`` is the number of
categories, whatever their ids.

Bad input (see :mod:`dfine.data.check`) is refused in the constructor or skipped there with one
summary warning; an image that only fails when decoded is replaced by another one with a warning
naming the file, so that an epoch never stops half-way.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors

from ..categories import COCO_CATEGORY_IDS, COCO_CLASS_NAMES
from .check import CocoScan, DatasetReport, ImageCheck, Issue, scan_coco
from .images import load_image, oversized_image_message, to_rgb
from .transforms import DetectionCompose

__all__ = [
    "CategoryMap",
    "CocoDetection",
    "read_coco_json",
]

# How many other images __getitem__ tries when an image fails to decode at load time.
MAX_LOAD_FALLBACKS = 10


@dataclass(frozen=True)
class CategoryMap:
    """Contiguous labels ``0..C-1`` <-> a dataset's category ids, with class names.

    Attributes:
        category_ids: ``category_ids[label]`` is the dataset category id of ``label``.
        class_names: ``class_names[label]`` is its name.
    """

    category_ids: tuple[int, ...]
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.category_ids) != len(self.class_names):
            raise ValueError(
                f"CategoryMap: {len(self.category_ids)} category_ids but {len(self.class_names)} "
                "class_names; give one name per id"
            )
        if len(set(self.category_ids)) != len(self.category_ids):
            raise ValueError(f"CategoryMap: category_ids {list(self.category_ids)} repeat an id; list each once")
        if not self.category_ids:
            raise ValueError("CategoryMap: no categories; the annotation file's 'categories' list is empty")

    @classmethod
    def mscoco(cls) -> CategoryMap:
        """The 80 MS-COCO classes (``remap_mscoco_category=True``): label i <-> COCO id."""
        return cls(COCO_CATEGORY_IDS, COCO_CLASS_NAMES)

    @classmethod
    def from_categories(cls, categories: Sequence[Mapping[str, Any]]) -> CategoryMap:
        """From a COCO ``categories`` list: labels follow ascending category id."""
        ordered = sorted(categories, key=lambda c: c["id"])
        return cls(tuple(int(c["id"]) for c in ordered), tuple(str(c.get("name", c["id"])) for c in ordered))

    @classmethod
    def identity(cls, categories: Sequence[Mapping[str, Any]]) -> CategoryMap:
        """label == category id, the official ``remap_mscoco_category: False`` behaviour.

        ``num_classes`` is the largest id + 1 (366 for Objects365, whose ids run 1..365); ids without a
        category are named ``unused_<id>``. Use it to train or evaluate checkpoints made that way.
        """
        names = {int(c["id"]): str(c.get("name", c["id"])) for c in categories}
        if not names or min(names) < 0:
            raise ValueError(f"CategoryMap.identity needs non-negative category ids, got {sorted(names)[:10]}")
        top = max(names)
        return cls(tuple(range(top + 1)), tuple(names.get(i, f"unused_{i}") for i in range(top + 1)))

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> CategoryMap:
        """Inverse of :meth:`to_dict` (e.g. from a checkpoint)."""
        return cls(tuple(int(i) for i in state["category_ids"]), tuple(str(n) for n in state["class_names"]))

    def to_dict(self) -> dict[str, list]:
        """Plain lists, to store with a checkpoint."""
        return {"category_ids": list(self.category_ids), "class_names": list(self.class_names)}

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    @property
    def label_to_category(self) -> dict[int, int]:
        return dict(enumerate(self.category_ids))

    @property
    def category_to_label(self) -> dict[int, int]:
        return {c: i for i, c in enumerate(self.category_ids)}

    @property
    def names_by_category(self) -> dict[int, str]:
        return dict(zip(self.category_ids, self.class_names))

    def labels_to_category_ids(self, labels: torch.Tensor) -> torch.Tensor:
        """Map predicted labels (any shape, int) back to dataset category ids, for evaluation."""
        table = torch.tensor(self.category_ids, dtype=torch.int64, device=labels.device)
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(
                f"labels must lie in 0..{self.num_classes - 1} for this {self.num_classes}-class map, got "
                f"{labels.min().item()}..{labels.max().item()}; the model and the dataset disagree on "
                "num_classes"
            )
        return table[labels.long()]

    def names_of(self, labels: torch.Tensor | Sequence[int]) -> list[str]:
        """Class names of predicted labels."""
        return [self.class_names[int(i)] for i in labels]


def object_categories(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The categories of a COCO dict that are object classes.

    A Roboflow export lists a superclass (e.g. ``{"id": 0, "name": "objects", "supercategory": "none"}``)
    that no annotation uses and that every other category names as its ``supercategory``: it is not a class.
    """
    categories = [dict(c) for c in data.get("categories", [])]
    if len(categories) < 2:
        return categories
    used = {a.get("category_id") for a in data.get("annotations", [])}
    parents = [
        c for c in categories
        if c["id"] not in used and all(o.get("supercategory") == c.get("name") for o in categories if o is not c)
    ]  # fmt: skip
    return [c for c in categories if c is not parents[0]] if len(parents) == 1 else categories


def read_coco_json(path: str | Path) -> dict[str, Any]:
    """Load a COCO annotation file, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}; check ann_file")
    try:
        with path.open(encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); re-export the annotations") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file (not UTF-8 JSON); point ann_file at the COCO json") from None
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: a COCO annotation file is a JSON object with images, annotations and categories, "
            f"found a JSON {type(data).__name__}; point ann_file at the COCO json"
        )
    return data


@dataclass(frozen=True)
class _ImageIndex:
    """Per-image arrays (numpy, not lists of dicts, so DataLoader workers share them copy-free)."""

    files: np.ndarray  # [I] str, absolute paths
    image_ids: np.ndarray  # [I] int64
    apply_exif: np.ndarray  # [I] bool
    offsets: np.ndarray  # [I + 1] int64, annotations of image i are rows offsets[i]:offsets[i + 1]
    boxes_xyxy: np.ndarray  # [N, 4] float32 absolute
    labels: np.ndarray  # [N] int64
    areas: np.ndarray  # [N] float32


def _build_index(data: Mapping[str, Any], folder: Path, scan: CocoScan, cmap: CategoryMap) -> _ImageIndex:
    images = [img for img in data["images"] if img["id"] not in scan.skip_image_ids]
    row_of = {img["id"]: i for i, img in enumerate(images)}
    to_label = cmap.category_to_label
    per_image: list[list[int]] = [[] for _ in images]
    for k, (ann, ok) in enumerate(zip(data.get("annotations", []), scan.keep)):
        if ok and not ann.get("iscrowd", 0) and ann["image_id"] in row_of:
            per_image[row_of[ann["image_id"]]].append(k)
    order = np.array([k for rows in per_image for k in rows], dtype=np.int64)
    anns = data.get("annotations", [])
    boxes = scan.boxes_xyxy[order].astype(np.float32).reshape(-1, 4)
    areas = scan.areas[order].astype(np.float32)  # NaN where the json has none: the box area instead
    areas = np.where(np.isfinite(areas), areas, (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    return _ImageIndex(
        files=np.array([str(folder / img["file_name"]) for img in images], dtype=str),
        image_ids=np.array([img["id"] for img in images], dtype=np.int64),
        apply_exif=np.array([scan.keep_exif.get(img["id"], True) for img in images], dtype=bool),
        offsets=np.cumsum([0] + [len(r) for r in per_image], dtype=np.int64),
        boxes_xyxy=boxes,
        labels=np.array([to_label[anns[k]["category_id"]] for k in order], dtype=np.int64),
        areas=areas.astype(np.float32),
    )


def _open_rgb(path: str, apply_exif: bool) -> Image.Image:
    if apply_exif:
        return load_image(path)
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb(image.copy())
    except Image.DecompressionBombError as err:
        raise ValueError(oversized_image_message(path, err)) from None
    except OSError as err:
        raise ValueError(f"{path}: cannot be decoded as an image ({err})") from None


class CocoDetection(Dataset):
    """COCO-format detection dataset.

    ``dataset[i]`` is ``(image, target)``. Without transforms, ``image`` is an RGB ``PIL.Image`` and
    ``target["boxes"]`` are absolute ``xyxy`` :class:`tv_tensors.BoundingBoxes`; after the standard
    pipeline (:func:`dfine.data.transforms.train_transforms`) ``image`` is a float ``[3, H, W]``
    tensor in [0, 1] and boxes are normalized ``cxcywh``. ``target`` holds ``boxes``, ``labels``
    (int64, ``0..num_classes-1``), ``image_id`` (int64), ``orig_size`` (int64 ``(w, h)``), ``area``
    (float32) and ``iscrowd`` (int64, all 0: crowd regions are not training targets).

    Args:
        img_folder: folder the images' ``file_name`` are relative to.
        ann_file: a COCO json file, or an already-parsed dict in that format (YOLO / VOC sources).
        transforms: a :class:`~dfine.data.transforms.DetectionCompose` (which may use the dataset,
            e.g. for Mosaic) or any callable ``(image, target) -> (image, target)``.
        remap_mscoco_category: use the fixed 80-class MS-COCO map (COCO and Objects365-to-COCO
            configs) instead of the json's own categories.
        category_map: force a label map, e.g. the training set's (for its validation set) or the one
            stored in a checkpoint; annotations with other categories are refused.
        image_check: how far images are opened when the dataset is built (``"none"``, ``"header"``,
            ``"decode"``; see :func:`dfine.data.check.scan_coco`).
        prior_issues: problems found while converting a non-COCO source, reported with the others.
    """

    def __init__(
        self,
        img_folder: str | Path,
        ann_file: str | Path | Mapping[str, Any],
        transforms: Callable[..., Any] | None = None,
        remap_mscoco_category: bool = False,
        *,
        category_map: CategoryMap | None = None,
        image_check: ImageCheck = "header",
        prior_issues: Sequence[Issue] = (),
    ) -> None:
        self.img_folder = Path(img_folder)
        self.ann_file = ann_file if isinstance(ann_file, Mapping) else Path(ann_file)
        self.source = "<in-memory annotations>" if isinstance(ann_file, Mapping) else str(ann_file)
        data = ann_file if isinstance(ann_file, Mapping) else read_coco_json(ann_file)
        check_names = category_map is not None  # the MS-COCO table maps by id, whatever the json's names
        if category_map is None and remap_mscoco_category:
            category_map = CategoryMap.mscoco()
        known = category_map.names_by_category if category_map is not None else None
        scan = scan_coco(
            data,
            self.img_folder,
            source=self.source,
            known_categories=known,
            check_names=check_names,
            image_check=image_check,
            prior_issues=prior_issues,
        )
        if scan.report.errors:
            first, more = scan.report.errors[0], len(scan.report.errors) - 1
            also = f" (and {more} more problem{'s' * (more > 1)})" if more else ""
            raise ValueError(
                f"{self.source}: cannot train on this dataset: {first.kind}: {first.detail}{also}; "
                f"run `dfine data check {self.source}` for the full report"
            )
        self.category_map = category_map or CategoryMap.from_categories(object_categories(data))
        self.report: DatasetReport = scan.report
        self._index = _build_index(data, self.img_folder, scan, self.category_map)
        self._gt = data if isinstance(ann_file, Mapping) else None  # a file is re-read on demand
        self._skip_image_ids = frozenset(scan.skip_image_ids)
        self._load_failures: set[str] = set()
        self.transforms = transforms
        if scan.report.warnings:
            warnings.warn(self._summary_warning(scan.report), stacklevel=2)

    def _summary_warning(self, report: DatasetReport) -> str:
        skipped = len(self._skip_image_ids)
        return (
            f"{self.source}: {skipped} image(s) left out, annotations repaired or dropped where noted - "
            f"{report.summary()}. Run `dfine data check` on this dataset for the full list."
        )

    @property
    def images_left_out(self) -> int:
        """Listed images that are missing or unreadable (not in ``len(self)``)."""
        return len(self._skip_image_ids)

    # -- label map -------------------------------------------------------------------------------
    @property
    def category_ids(self) -> list[int]:
        """``category_ids[label]`` is the dataset category id of ``label``."""
        return list(self.category_map.category_ids)

    @property
    def class_names(self) -> list[str]:
        return list(self.category_map.class_names)

    @property
    def num_classes(self) -> int:
        return self.category_map.num_classes

    @property
    def label_to_category(self) -> dict[int, int]:
        return self.category_map.label_to_category

    @property
    def category_to_label(self) -> dict[int, int]:
        return self.category_map.category_to_label

    # -- items -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._index.files)

    @property
    def num_boxes(self) -> int:
        """Annotated boxes over all images (crowd boxes excluded)."""
        return len(self._index.labels)

    @property
    def image_ids(self) -> list[int]:
        return self._index.image_ids.tolist()

    def image_path(self, index: int) -> Path:
        return Path(self._index.files[index])

    def load_item(self, index: int) -> tuple[Image.Image, dict[str, Any]]:
        """The untransformed ``(image, target)`` of ``index`` (absolute ``xyxy`` boxes).

        Raises:
            ValueError: the image file cannot be decoded.
            FileNotFoundError: the image file disappeared.
        """
        ix = self._index
        image = _open_rgb(str(ix.files[index]), bool(ix.apply_exif[index]))
        w, h = image.size
        lo, hi = ix.offsets[index], ix.offsets[index + 1]
        boxes = torch.from_numpy(ix.boxes_xyxy[lo:hi]).clone()
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)  # the file may be smaller than its json says
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes[keep], format="XYXY", canvas_size=(h, w)),
            "labels": torch.from_numpy(ix.labels[lo:hi])[keep],
            "image_id": torch.tensor(int(ix.image_ids[index]), dtype=torch.int64),
            "orig_size": torch.tensor([w, h], dtype=torch.int64),
            "area": torch.from_numpy(ix.areas[lo:hi])[keep],
            "iscrowd": torch.zeros(int(keep.sum()), dtype=torch.int64),
        }
        return image, target

    def _load_with_fallback(self, index: int) -> tuple[Image.Image, dict[str, Any]]:
        for attempt in range(MAX_LOAD_FALLBACKS + 1):
            i = (index + attempt) % len(self)
            try:
                return self.load_item(i)
            except (ValueError, OSError) as err:
                path = str(self._index.files[i])
                if path not in self._load_failures:  # once per file and process
                    self._load_failures.add(path)
                    warnings.warn(
                        f"{path}: cannot be loaded ({err}); another image is used in its place. Run "
                        f"`dfine data check` with decoding on to find every such file.",
                        stacklevel=3,
                    )
        raise RuntimeError(
            f"{self.source}: {MAX_LOAD_FALLBACKS + 1} images in a row from index {index} cannot be loaded; "
            f"check {self.img_folder} with `dfine data check`"
        )

    def __getitem__(self, index: int) -> tuple[Any, dict[str, Any]]:
        image, target = self._load_with_fallback(index)
        if self.transforms is None:
            return image, target
        if isinstance(self.transforms, DetectionCompose):
            return self.transforms(image, target, dataset=self)
        return self.transforms(image, target)

    # -- evaluation ------------------------------------------------------------------------------
    def coco_gt_dict(self) -> dict[str, Any]:
        """The ground truth for COCO evaluation: the images this dataset kept, all their annotations
        (crowd ones included), unique annotation ids, and the label map's categories."""
        data = self._gt if self._gt is not None else read_coco_json(self.ann_file)
        kept = set(self._index.image_ids.tolist())
        anns = [dict(a) for a in data.get("annotations", []) if a["image_id"] in kept]
        ids = [a.get("id") for a in anns]
        if len(set(ids)) != len(ids) or None in ids or 0 in ids:  # COCOeval reads id 0 as "no match"
            for k, ann in enumerate(anns, start=1):
                ann["id"] = k
        return {
            "images": [img for img in data["images"] if img["id"] in kept],
            "annotations": anns,
            "categories": [{"id": c, "name": n} for c, n in self.category_map.names_by_category.items()],
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(img_folder={str(self.img_folder)!r}, ann_file={self.source!r}, "
            f"images={len(self)}, classes={self.num_classes}, transforms={self.transforms!r})"
        )

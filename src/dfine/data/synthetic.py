"""A generated COCO-format detection set: coloured shapes on textured backgrounds.

Training can be shown and tested without a download: ``dfine data synth --out DIR`` writes ::

    DIR/images/train/000000.jpg ...    DIR/annotations/instances_train.json
    DIR/images/val/000000.jpg ...      DIR/annotations/instances_val.json

(the README's custom-dataset layout, so ``dfine.data.layout.dataset_from_folder(DIR, "train")`` reads it).

The set is meant to be learnable in minutes on a CPU: a few clearly distinct shape classes
(circle, square, triangle, star, cross) in saturated colours on darker, desaturated backgrounds
(gradient plus noise, stripes or a checkerboard). Sizes run from small to large, mostly medium /
large; objects may overlap, later ones hiding at most ``max_covered`` of an earlier box; a share of
images holds no object. Everything follows from ``seed``: image ``i`` of a split is drawn from its
own generator seeded by ``(seed, split, i)``, so the same config gives the same files.
"""

from __future__ import annotations

import colorsys
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["SHAPE_CLASSES", "SynthConfig", "SyntheticDataset", "generate_synthetic_dataset", "render_image"]

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
_SPLIT_CODES = {"train": 0, "val": 1}
SMALL_OBJECT_PX = 32  # COCO's small/medium boundary (area 32**2)
PLACEMENT_TRIES = 30  # placements tried per object before it is left out
STAR_INNER_RATIO = 0.45  # inner / outer radius of the five-point star
CROSS_ARM_RATIO = 0.32  # arm half-width / outer radius of the cross
UPRIGHT_JITTER_DEG = 20.0  # squares and crosses stay near upright, so a square never becomes a diamond


@dataclass(frozen=True)
class SynthConfig:
    """How the synthetic set is drawn.

    Attributes:
        num_train, num_val: images per split.
        image_size: width and height in pixels.
        seed: everything follows from it.
        classes: shape classes, a subset of :data:`SHAPE_CLASSES` (category ids ``1..C`` in this order).
        min_objects, max_objects: objects in an image that has any.
        empty_fraction: share of images with no object (negatives).
        min_object_size: smallest object extent in pixels.
        max_object_size: largest extent; None is half the image.
        small_fraction: share of objects below 32 px (COCO "small"); the rest are 32 px or more.
        max_covered: largest share of an object's box that later objects may cover.
        jpeg_quality: JPEG quality of the written images.
    """

    num_train: int = 1000
    num_val: int = 100
    image_size: int = 320
    seed: int = 0
    classes: tuple[str, ...] = SHAPE_CLASSES
    min_objects: int = 1
    max_objects: int = 6
    empty_fraction: float = 0.05
    min_object_size: int = 12
    max_object_size: int | None = None
    small_fraction: float = 0.15
    max_covered: float = 0.35
    jpeg_quality: int = 92

    def __post_init__(self) -> None:
        unknown = [c for c in self.classes if c not in SHAPE_CLASSES]
        if unknown or not self.classes or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"SynthConfig.classes: {list(self.classes)}; pick distinct names from {SHAPE_CLASSES}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(
                f"SynthConfig: need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}"
            )
        if self.image_size < 32 or not 4 <= self.min_object_size <= self.largest_object:
            raise ValueError(
                f"SynthConfig: image_size {self.image_size} and object sizes {self.min_object_size}.."
                f"{self.largest_object} do not fit; use image_size >= 32 and "
                "4 <= min_object_size <= max_object_size"
            )
        for name in ("empty_fraction", "small_fraction", "max_covered"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"SynthConfig.{name} must be in [0, 1], got {getattr(self, name)}")

    @property
    def largest_object(self) -> int:
        return min(self.max_object_size or self.image_size // 2, self.image_size - 2)


@dataclass(frozen=True)
class SyntheticDataset:
    """Where a generated set was written."""

    root: Path
    class_names: tuple[str, ...]

    def img_folder(self, split: str) -> Path:
        return self.root / "images" / split

    def ann_file(self, split: str) -> Path:
        return self.root / "annotations" / f"instances_{split}.json"


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h, s, v)) * 255.0


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """[size, size, 3] float32: a dull two-colour gradient plus one texture and a little noise."""
    c0 = _hsv(rng.random(), rng.uniform(0.0, 0.35), rng.uniform(0.15, 0.5)).astype(np.float32)
    c1 = _hsv(rng.random(), rng.uniform(0.0, 0.35), rng.uniform(0.15, 0.5)).astype(np.float32)
    coords = np.arange(size, dtype=np.float32) / size
    xx, yy = coords[None, :], coords[:, None]  # broadcast to [size, size]
    angle = rng.uniform(0, 2 * math.pi)
    t = np.float32(np.cos(angle)) * xx + np.float32(np.sin(angle)) * yy
    t = ((t - t.min()) / max(float(np.ptp(t)), 1e-6))[..., None]
    image = c0 * (1 - t) + c1 * t
    kind = rng.integers(3)
    if kind == 0:  # stripes
        period, theta = rng.uniform(6, 40) / size, rng.uniform(0, math.pi)
        phase = (np.float32(np.cos(theta)) * xx + np.float32(np.sin(theta)) * yy) / np.float32(period)
        image += (16.0 * np.sin(2 * np.pi * phase))[..., None]
    elif kind == 1:  # checkerboard
        cell = np.float32(rng.uniform(8, 40) / size)
        image += (14.0 * (((xx // cell) + (yy // cell)) % 2 * 2 - 1))[..., None].astype(np.float32)
    sigma = np.float32(10.0 if kind == 2 else 4.0)
    image += sigma * rng.standard_normal(image.shape, dtype=np.float32)
    return image


def _outline(shape: str, radius: float, angle: float) -> np.ndarray | None:
    """[K, 2] polygon around the origin (None for a circle)."""
    if shape == "circle":
        return None
    if shape == "square":
        a = angle + np.pi / 4 + np.arange(4) * np.pi / 2
        radii = np.full(4, radius)
    elif shape == "triangle":
        a = angle - np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        radii = np.full(3, radius)
    elif shape == "star":
        a = angle - np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, radius, radius * STAR_INNER_RATIO)
    else:  # cross: 12 corners of a plus sign, rotated
        w = CROSS_ARM_RATIO * radius
        pts = np.array(
            [
                [w, -radius],
                [w, -w],
                [radius, -w],
                [radius, w],
                [w, w],
                [w, radius],
                [-w, radius],
                [-w, w],
                [-radius, w],
                [-radius, -w],
                [-w, -w],
                [-w, -radius],
            ]
        )
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        return pts @ rot.T
    return np.stack([radii * np.cos(a), radii * np.sin(a)], axis=1)


def _polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def _object_size(rng: np.random.Generator, cfg: SynthConfig) -> float:
    lo, hi = cfg.min_object_size, cfg.largest_object
    small_top = min(SMALL_OBJECT_PX, hi)
    if rng.random() < cfg.small_fraction and lo < small_top:
        return float(rng.uniform(lo, small_top))
    return float(rng.uniform(max(lo, small_top), hi))


def _covered_too_much(box: np.ndarray, placed: Sequence[np.ndarray], max_covered: float) -> bool:
    for other in placed:
        iw = min(box[2], other[2]) - max(box[0], other[0])
        ih = min(box[3], other[3]) - max(box[1], other[1])
        if iw > 0 and ih > 0 and iw * ih > max_covered * (other[2] - other[0]) * (other[3] - other[1]):
            return True
    return False


def _place(rng: np.random.Generator, cfg: SynthConfig, shape: str, placed: list[np.ndarray]) -> dict | None:
    size = _object_size(rng, cfg)
    jitter = math.radians(UPRIGHT_JITTER_DEG)
    angle = rng.uniform(-jitter, jitter) if shape in ("square", "cross") else rng.uniform(0, 2 * math.pi)
    outline = _outline(shape, size / 2, angle)
    extent = np.array([size, size]) if outline is None else outline.max(0) - outline.min(0)
    low = np.array([-size / 2, -size / 2]) if outline is None else outline.min(0)
    for _ in range(PLACEMENT_TRIES):
        corner = rng.uniform(0, cfg.image_size - extent)  # box top-left, box inside the image
        box = np.concatenate([corner, corner + extent])
        if not _covered_too_much(box, placed, cfg.max_covered):
            return {"shape": shape, "box": box, "points": None if outline is None else outline - low + corner}
    return None


def render_image(rng: np.random.Generator, cfg: SynthConfig, empty: bool) -> tuple[Image.Image, list[dict]]:
    """One image and its objects (``{"category_id", "bbox" xywh, "area"}``), drawn from ``rng``."""
    background = _background(rng, cfg.image_size)
    image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    objects: list[dict[str, Any]] = []
    placed: list[np.ndarray] = []
    count = 0 if empty else int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    for _ in range(count):
        label = int(rng.integers(len(cfg.classes)))
        obj = _place(rng, cfg, cfg.classes[label], placed)
        if obj is None:
            continue
        colour = tuple(int(c) for c in _hsv(rng.random(), rng.uniform(0.55, 1.0), rng.uniform(0.7, 1.0)))
        box = obj["box"]
        if obj["points"] is None:
            draw.ellipse(box.tolist(), fill=colour)
            area = math.pi * ((box[2] - box[0]) / 2) ** 2
        else:
            draw.polygon([tuple(p) for p in obj["points"].tolist()], fill=colour)
            area = _polygon_area(obj["points"])
        placed.append(box)
        x0, y0, x1, y1 = (round(float(v), 2) for v in box)
        objects.append(
            {
                "category_id": label + 1,
                "bbox": [x0, y0, round(x1 - x0, 2), round(y1 - y0, 2)],
                "area": round(area, 2),
            }
        )
    return image, objects


def _write_split(root: Path, split: str, count: int, cfg: SynthConfig) -> None:
    folder = root / "images" / split
    folder.mkdir(parents=True, exist_ok=True)
    code = _SPLIT_CODES.get(split, len(_SPLIT_CODES))
    num_empty = round(count * cfg.empty_fraction)
    if cfg.empty_fraction > 0 and count >= 2:
        num_empty = max(num_empty, 1)
    empty = set(np.random.default_rng([cfg.seed, code, 2**31]).permutation(count)[:num_empty].tolist())
    images, annotations = [], []
    for i in range(count):
        rng = np.random.default_rng([cfg.seed, code, i])
        image, objects = render_image(rng, cfg, empty=i in empty)
        name = f"{i:06d}.jpg"
        image.save(folder / name, quality=cfg.jpeg_quality)
        images.append({"id": i + 1, "file_name": name, "width": cfg.image_size, "height": cfg.image_size})
        for obj in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "iscrowd": 0, **obj})
    data = {
        "info": {"description": f"dfine synthetic shapes, seed {cfg.seed}, split {split}"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": n, "supercategory": "shape"} for k, n in enumerate(cfg.classes)],
    }
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data), encoding="utf-8")


def generate_synthetic_dataset(out_dir: str | Path, config: SynthConfig | None = None) -> SyntheticDataset:
    """Write the train and val splits of the synthetic set under ``out_dir`` (see module docstring)."""
    cfg = config or SynthConfig()
    root = Path(out_dir)
    for split, count in (("train", cfg.num_train), ("val", cfg.num_val)):
        _write_split(root, split, count, cfg)
    return SyntheticDataset(root, cfg.classes)

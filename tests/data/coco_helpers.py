"""Helpers for the data tests: tiny COCO-format datasets written into ``tmp_path``."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image


def write_image(path: Path, size: tuple[int, int], colour: tuple[int, int, int] = (90, 120, 150)) -> Path:
    """An RGB JPEG (or PNG, by suffix) of ``size`` (w, h), with a light square so it is not flat."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, colour)
    image.paste((240, 240, 240), (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))
    image.save(path, quality=95)
    return path


def ann(ann_id: int, image_id: int, category_id: int, bbox: Sequence[float], **extra: Any) -> dict[str, Any]:
    """A COCO annotation with area from the box unless given."""
    out = {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": list(bbox), "iscrowd": 0}
    out["area"] = bbox[2] * bbox[3]
    out.update(extra)
    return out


def coco_factory(root: Path) -> Callable[..., tuple[Path, Path]]:
    """``factory(images, annotations, categories, skip_files=(), name=...)`` -> (img_folder, ann_file).

    ``images`` are ``(image_id, file_name, w, h)``; every file is written except those in ``skip_files``.
    """

    def factory(
        images: Sequence[tuple[int, str, int, int]],
        annotations: Sequence[dict[str, Any]],
        categories: Sequence[dict[str, Any]],
        skip_files: Sequence[str] = (),
        name: str = "instances_train.json",
    ) -> tuple[Path, Path]:
        folder = root / "images"
        for _, file_name, w, h in images:
            if file_name not in skip_files:
                write_image(folder / file_name, (w, h))
        data = {
            "images": [{"id": i, "file_name": f, "width": w, "height": h} for i, f, w, h in images],
            "annotations": list(annotations),
            "categories": list(categories),
        }
        ann_file = root / "annotations" / name
        ann_file.parent.mkdir(parents=True, exist_ok=True)
        ann_file.write_text(json.dumps(data))
        return folder, ann_file

    return factory


def cats(*pairs: tuple[int, str]) -> list[dict[str, Any]]:
    return [{"id": i, "name": n} for i, n in pairs]

"""Objects365 as the D-FINE README lays it out: the val-to-train remap, the 640-px resize, the paths.

Layout (``BASE`` = ``/data/Objects365/data`` in the README)::

    BASE/train/images/v1/patch0/*.jpg ...      BASE/train/zhiyuan_objv2_train.json
    BASE/train/images_from_val/v1|v2/...       (a copy of BASE/val/images/v1, v2)
    BASE/val/images/v1|v2/patchN/*.jpg         BASE/val/zhiyuan_objv2_val.json

1. :func:`remap_objects365` (``tools/remap_obj365.py``): val images at positions ``5000..800000`` of
   the val json move to the training set (their ``file_name`` re-rooted under ``images_from_val``);
   the first 5000 stay as the new val set. Writes ``new_zhiyuan_objv2_{train,val}.json``.
2. :func:`resize_objects365` (``tools/resize_obj365.py``): images whose longer edge exceeds 640 px are
   saved beside the original as ``*_resized.jpg`` with their boxes and areas scaled; writes
   ``new_zhiyuan_objv2_{train,val}_resized.json``, the files the dataset config reads.

Differences from the official scripts, all on the safe side: val image / annotation ids that collide
with train ids are re-numbered; boxes are scaled per axis by the exact size ratio; an existing
``*_resized.jpg`` of the right size is reused, so an interrupted resize can be re-run.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image

from .coco import CocoDetection, read_coco_json

__all__ = [
    "RemapResult",
    "ResizeResult",
    "objects365_dataset",
    "objects365_paths",
    "remap_objects365",
    "resize_objects365",
    "resize_split",
    "split_val_ids",
]

TRAIN_JSON = "zhiyuan_objv2_train.json"
VAL_JSON = "zhiyuan_objv2_val.json"
NEW_TRAIN_JSON = "new_zhiyuan_objv2_train.json"
NEW_VAL_JSON = "new_zhiyuan_objv2_val.json"
RESIZED_TRAIN_JSON = "new_zhiyuan_objv2_train_resized.json"
RESIZED_VAL_JSON = "new_zhiyuan_objv2_val_resized.json"
IMAGES_FROM_VAL = "images_from_val"
VAL_KEEP = 5000  # the README: val samples 5000..800000 move to train, the first 5000 stay
VAL_MOVE_END = 800000
MAX_SIZE = 640  # longer edge after resize_obj365.py
JPEG_QUALITY = 90  # re-encoding quality of resized images (PIL's default, 75, blurs small objects)
RESIZED_SUFFIX = "_resized"
IO_WORKERS = 8
RESIZE_CHUNK = 4096  # images submitted to the thread pool at a time, to bound memory


@dataclass(frozen=True)
class RemapResult:
    train_json: Path
    val_json: Path
    moved_images: int
    kept_val_images: int
    dropped_images: int
    renumbered_ids: bool


@dataclass(frozen=True)
class ResizeResult:
    json_file: Path
    resized: int
    unchanged: int
    failed: tuple[str, ...]


def split_val_ids(image_ids: Sequence[int], keep: int = VAL_KEEP, move_end: int = VAL_MOVE_END) -> tuple[list, list]:
    """(ids kept in val, ids moved to train) by position in the val json: ``[:keep]``, ``[keep:move_end]``."""
    if not 0 <= keep <= move_end:
        raise ValueError(f"need 0 <= keep <= move_end, got keep={keep}, move_end={move_end}")
    return list(image_ids[:keep]), list(image_ids[keep:move_end])


def _reroot(file_name: str) -> str:
    """``images/v1/patch0/x.jpg`` -> ``images_from_val/v1/patch0/x.jpg`` (first folder replaced)."""
    parts = PurePosixPath(file_name).parts
    return str(PurePosixPath(IMAGES_FROM_VAL, *(parts[1:] if len(parts) > 1 else parts)))


def _subset(data: dict[str, Any], ids: set[int]) -> tuple[list[dict], list[dict]]:
    images = [img for img in data["images"] if img["id"] in ids]
    return images, [a for a in data.get("annotations", []) if a["image_id"] in ids]


def _renumber(images: list[dict], anns: list[dict], train: dict[str, Any]) -> bool:
    """Shift moved val ids past the train ids where they would collide; True if anything changed."""
    train_image_ids = {img["id"] for img in train["images"]}
    train_ann_ids = {a.get("id") for a in train.get("annotations", [])}
    clash = any(img["id"] in train_image_ids for img in images) or any(a.get("id") in train_ann_ids for a in anns)
    if not clash:
        return False
    image_offset = max(train_image_ids, default=0) + 1
    ann_offset = max((i for i in train_ann_ids if isinstance(i, int)), default=0) + 1
    for img in images:
        img["id"] += image_offset
    for k, ann in enumerate(anns):
        ann["image_id"] += image_offset
        ann["id"] = ann_offset + k
    return True


def _write_json(data: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    tmp.replace(path)  # atomic: a crash never leaves half a json under the final name


def copy_val_images(base_dir: str | Path) -> Path:
    """README step 3: copy ``val/images/v1`` and ``v2`` into ``train/images_from_val``."""
    base = Path(base_dir)
    target = base / "train" / IMAGES_FROM_VAL
    for version in ("v1", "v2"):
        source = base / "val" / "images" / version
        if source.is_dir():
            shutil.copytree(source, target / version, dirs_exist_ok=True)
    return target


def remap_objects365(
    base_dir: str | Path, *, keep: int = VAL_KEEP, move_end: int = VAL_MOVE_END, copy_images: bool = False
) -> RemapResult:
    """Move val samples ``keep..move_end`` into train and write the ``new_zhiyuan_objv2_*.json`` files.

    Args:
        base_dir: the Objects365 ``data`` folder holding ``train/`` and ``val/``.
        keep: val images kept as the new val set (the first ``keep`` of the val json).
        move_end: end position of the moved range; later val images (none in Objects365 v2) are dropped.
        copy_images: also copy the val image folders to ``train/images_from_val`` (README step 3).
    """
    base = Path(base_dir)
    train = read_coco_json(base / "train" / TRAIN_JSON)
    val = read_coco_json(base / "val" / VAL_JSON)
    kept_ids, moved_ids = split_val_ids([img["id"] for img in val["images"]], keep, move_end)
    new_val_images, new_val_anns = _subset(val, set(kept_ids))
    moved_images, moved_anns = _subset(val, set(moved_ids))
    moved_images = [dict(img, file_name=_reroot(img["file_name"])) for img in moved_images]
    moved_anns = [dict(a) for a in moved_anns]
    renumbered = _renumber(moved_images, moved_anns, train)
    new_train = {
        "images": moved_images + train["images"],
        "annotations": moved_anns + train.get("annotations", []),
        "categories": train["categories"],
    }
    new_val = {"images": new_val_images, "annotations": new_val_anns, "categories": val["categories"]}
    if copy_images:
        copy_val_images(base)
    train_json, val_json = base / "train" / NEW_TRAIN_JSON, base / "val" / NEW_VAL_JSON
    _write_json(new_train, train_json)
    _write_json(new_val, val_json)
    dropped = len(val["images"]) - len(kept_ids) - len(moved_ids)
    return RemapResult(train_json, val_json, len(moved_ids), len(kept_ids), dropped, renumbered)


def _resized_name(file_name: str) -> str:
    path = PurePosixPath(file_name)
    return str(path.with_name(f"{path.stem}{RESIZED_SUFFIX}{path.suffix}"))


def _size_of(path: Path) -> tuple[int, int] | None:
    try:
        with Image.open(path) as image:
            return image.size
    except OSError:
        return None


def _resize_one(img_folder: Path, info: dict[str, Any], max_size: int) -> tuple[str, float, float, int, int] | str:
    """(new file_name, x scale, y scale, new w, new h), or an error message."""
    source = img_folder / info["file_name"]
    try:
        with Image.open(source) as image:
            w, h = image.size
            if max(w, h) <= max_size:
                return info["file_name"], 1.0, 1.0, w, h
            scale = max_size / max(w, h)
            new_w, new_h = max(1, int(w * scale)), max(1, int(h * scale))
            name = _resized_name(info["file_name"])
            target = img_folder / name
            if _size_of(target) != (new_w, new_h):
                image.convert("RGB").resize((new_w, new_h), Image.Resampling.LANCZOS).save(target, quality=JPEG_QUALITY)
    except (OSError, SyntaxError, ValueError) as err:
        return f"{source}: {err}"
    return name, new_w / w, new_h / h, new_w, new_h


def _chunked_map(pool: ThreadPoolExecutor, folder: Path, infos: list[dict], max_size: int):
    """(info, result) in order, with at most RESIZE_CHUNK images in flight (Objects365 has 1.7 M)."""
    for start in range(0, len(infos), RESIZE_CHUNK):
        chunk = infos[start : start + RESIZE_CHUNK]
        yield from zip(chunk, pool.map(lambda info: _resize_one(folder, info, max_size), chunk))


def resize_split(
    img_folder: str | Path,
    ann_file: str | Path,
    out_file: str | Path,
    *,
    max_size: int = MAX_SIZE,
    workers: int = IO_WORKERS,
    progress: Callable[[int, int], None] | None = None,
) -> ResizeResult:
    """Resize the images of one annotation file whose longer edge exceeds ``max_size``; write ``out_file``.

    Images that cannot be read are left out of the new json (with their annotations) and listed in
    the result, as the official script drops them.
    """
    folder = Path(img_folder)
    data = read_coco_json(ann_file)
    by_image: dict[int, list[dict]] = {}
    for ann in data.get("annotations", []):
        by_image.setdefault(ann["image_id"], []).append(ann)
    images, anns, failed, resized = [], [], [], 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done, (info, result) in enumerate(_chunked_map(pool, folder, data["images"], max_size), start=1):
            if progress is not None:
                progress(done, len(data["images"]))
            if isinstance(result, str):
                failed.append(result)
                continue
            name, sx, sy, w, h = result
            resized += name != info["file_name"]
            images.append(dict(info, file_name=name, width=w, height=h))
            for ann in by_image.get(info["id"], []):
                x, y, bw, bh = ann["bbox"]
                scaled = {
                    "bbox": [x * sx, y * sy, bw * sx, bh * sy],
                    "area": ann.get("area", bw * bh) * sx * sy,
                }
                anns.append(dict(ann, **scaled))
    _write_json({"images": images, "annotations": anns, "categories": data["categories"]}, Path(out_file))
    return ResizeResult(Path(out_file), resized, len(images) - resized, tuple(failed))


def resize_objects365(
    base_dir: str | Path,
    *,
    max_size: int = MAX_SIZE,
    workers: int = IO_WORKERS,
    splits: Sequence[str] = ("train", "val"),
) -> list[ResizeResult]:
    """README step 6 on both splits: ``new_zhiyuan_objv2_{split}.json`` -> ``..._resized.json``."""
    base = Path(base_dir)
    names = {"train": (NEW_TRAIN_JSON, RESIZED_TRAIN_JSON), "val": (NEW_VAL_JSON, RESIZED_VAL_JSON)}
    results = []
    for split in splits:
        source, target = names[split]
        if not (base / split / source).is_file():
            raise FileNotFoundError(
                f"{base / split / source} not found; run tools/remap_obj365.py --base_dir {base} first"
            )
        results.append(
            resize_split(base / split, base / split / source, base / split / target, max_size=max_size, workers=workers)
        )
    return results


def objects365_paths(base_dir: str | Path, split: str) -> tuple[Path, Path]:
    """(img_folder, ann_file) of a split as ``configs/dataset/obj365_detection.yml`` sets them."""
    base = Path(base_dir)
    names = {"train": RESIZED_TRAIN_JSON, "val": RESIZED_VAL_JSON}
    if split not in names:
        raise ValueError(f"Objects365 split must be 'train' or 'val', got {split!r}")
    return base / split, base / split / names[split]


def objects365_dataset(base_dir: str | Path, split: str, transforms: Any = None, **kwargs: Any) -> CocoDetection:
    """The prepared (remapped and resized) Objects365 split as a :class:`CocoDetection` (365 classes)."""
    img_folder, ann_file = objects365_paths(base_dir, split)
    if not ann_file.is_file():
        raise FileNotFoundError(
            f"{ann_file} not found; prepare Objects365 with tools/remap_obj365.py and tools/resize_obj365.py "
            f"--base_dir {base_dir}"
        )
    return CocoDetection(img_folder, ann_file, transforms, **kwargs)

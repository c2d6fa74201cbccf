"""Dataset checks: everything that would otherwise fail (or silently mislead) in the middle of training.

One scan, two users: ``dfine data check`` prints the :class:`DatasetReport`, and
:class:`dfine.data.coco.CocoDetection` uses the same :func:`scan_coco` when it is built, so that each
problem is either refused before the first step (an *error*) or skipped / repaired with one summary
warning (a *warning*). Nothing here imports the dataset module; it works on a COCO-format ``dict``.

What is found, and what training does with it:

========================  ========  =========================================================
kind                      severity  training
========================  ========  =========================================================
``missing_file``          warning   image left out
``unreadable_image``      warning   image left out
``oversized_image``       warning   image left out (over PIL's decompression-bomb limit)
``truncated_image``       warning   image left out (found with ``image_check="decode"``;
                                    otherwise replaced by another image when it is loaded)
``size_mismatch``         warning   the real image size is used
``exif_rotated``          warning   image loaded unrotated, to match its boxes
``box_outside_image``     warning   box clipped to the image (dropped if nothing is left)
``degenerate_box``        warning   annotation dropped (zero or negative width, height or area)
``malformed_box``         warning   annotation dropped (not four finite numbers)
``unknown_image_id``      warning   annotation dropped (its ``image_id`` names no image)
``duplicate_annotation``  warning   kept; re-numbered in :meth:`CocoDetection.coco_gt_dict`
``duplicate_file_name``   warning   kept (two image entries read the same file)
``bad_label_line``        warning   line dropped (YOLO / VOC sources)
``unknown_category``      error     refused: the label map cannot place the annotation
``category_mismatch``     error     refused: a category id has another name in the label map
``duplicate_image_id``    error     refused: annotations cannot be assigned to one image
``duplicate_category_id`` error     refused: the label map would be ambiguous
========================  ========  =========================================================
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from .images import oversized_image_message

__all__ = [
    "ERROR_KINDS",
    "CocoScan",
    "DatasetReport",
    "ImageCheck",
    "Issue",
    "probe_image",
    "scan_coco",
    "validate_coco_structure",
]

ImageCheck = Literal["none", "header", "decode"]

ERROR_KINDS = frozenset({"unknown_category", "category_mismatch", "duplicate_image_id", "duplicate_category_id"})

# COCO json boxes are floats written by many tools; a box that pokes out of the image by less than this
# many pixels is rounding, not an annotation error (it is still clipped, but not reported).
OUTSIDE_TOLERANCE_PX = 1.0
# EXIF orientations (TIFF tag 0x0112) that swap width and height when applied.
_EXIF_ORIENTATION_TAG = 0x0112
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})
# Threads used to open image headers / decode images (file I/O bound, so more than the core count).
DEFAULT_IO_WORKERS = 8


@dataclass(frozen=True)
class Issue:
    """One problem found in a dataset.

    Attributes:
        kind: one of the kinds in the module table.
        where: the file the problem is in (an image, or the annotation / label file).
        detail: what is wrong, and for errors how to fix it.
    """

    kind: str
    where: str
    detail: str

    @property
    def is_error(self) -> bool:
        return self.kind in ERROR_KINDS


@dataclass
class DatasetReport:
    """What a scan found: counts, class histogram and issues."""

    source: str
    num_images: int = 0
    num_annotations: int = 0
    num_crowd: int = 0
    num_negative_images: int = 0
    class_histogram: dict[str, int] = field(default_factory=dict)
    issues: list[Issue] = field(default_factory=list)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.is_error]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if not i.is_error]

    @property
    def ok(self) -> bool:
        return not self.errors

    def by_kind(self) -> dict[str, list[Issue]]:
        grouped: dict[str, list[Issue]] = defaultdict(list)
        for issue in self.issues:
            grouped[issue.kind].append(issue)
        return dict(grouped)

    def summary(self, max_files: int = 3) -> str:
        """One line per issue kind: how many, and the first ``max_files`` files."""
        lines = []
        for kind, issues in sorted(self.by_kind().items()):
            files = list(dict.fromkeys(i.where for i in issues))
            shown = ", ".join(files[:max_files]) + (", ..." if len(files) > max_files else "")
            lines.append(f"{kind}: {len(issues)} ({shown})")
        return "; ".join(lines)

    def format(self, max_per_kind: int = 10) -> str:
        """A human-readable multi-line report (what ``dfine data check`` prints)."""
        out = [
            f"dataset: {self.source}",
            f"  images: {self.num_images} ({self.num_negative_images} without objects)",
            f"  annotations: {self.num_annotations} (+{self.num_crowd} crowd, ignored for training)",
            "  class histogram:",
        ]
        width = max((len(n) for n in self.class_histogram), default=0)
        for name, count in self.class_histogram.items():
            out.append(f"    {name:<{width}}  {count}")
        if not self.issues:
            out.append("  no problems found")
        for kind, issues in sorted(self.by_kind().items(), key=lambda kv: (not kv[1][0].is_error, kv[0])):
            severity = "ERROR" if issues[0].is_error else "warning"
            out.append(f"  {severity} {kind}: {len(issues)}")
            out.extend(f"    {i.where}: {i.detail}" for i in issues[:max_per_kind])
            if len(issues) > max_per_kind:
                out.append(f"    ... and {len(issues) - max_per_kind} more")
        return "\n".join(out)


@dataclass
class CocoScan:
    """A scan of a COCO-format dict, in the order of ``data["images"]`` / ``data["annotations"]``.

    Attributes:
        report: counts and issues.
        skip_image_ids: images to leave out (missing, unreadable or truncated files).
        image_sizes: best known (width, height) per image id: from the file when it was opened, else
            from the json.
        keep_exif: per image id, False where the image must be loaded without applying its EXIF
            orientation because the boxes were drawn on the stored pixels.
        keep: [num_annotations] bool, annotations usable for training (crowd ones included).
        boxes_xyxy: [num_annotations, 4] float64 absolute boxes, clipped to the image where its size is
            known; rows of dropped annotations are meaningless.
        areas: [num_annotations] float64 ``area`` fields, NaN where absent or not a number.
    """

    report: DatasetReport
    skip_image_ids: set[int]
    image_sizes: dict[int, tuple[int, int]]
    keep_exif: dict[int, bool]
    keep: np.ndarray
    boxes_xyxy: np.ndarray
    areas: np.ndarray


def _structure_error(source: str, where: str, field_name: str, fix: str) -> ValueError:
    return ValueError(f"{source}: {where} has no valid '{field_name}'; {fix}")


def validate_coco_structure(data: Any, source: str) -> None:
    """Raise ``ValueError`` (naming the file, the entry and the field) if ``data`` is not COCO-shaped."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: the top level must be a JSON object with 'images', 'annotations', 'categories'")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise _structure_error(source, "the top level", key, f"add a '{key}' list (COCO detection format)")
    if not isinstance(data.get("annotations", []), list):
        raise _structure_error(source, "the top level", "annotations", "make 'annotations' a list")
    for i, img in enumerate(data["images"]):
        if not isinstance(img, Mapping) or not isinstance(img.get("id"), int) or isinstance(img.get("id"), bool):
            raise _structure_error(source, f"images[{i}]", "id", "give every image an integer 'id'")
        if not isinstance(img.get("file_name"), str) or not img["file_name"]:
            raise _structure_error(
                source, f"images[{i}]", "file_name", "give every image its path relative to img_folder"
            )
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, Mapping) or not isinstance(cat.get("id"), int) or isinstance(cat.get("id"), bool):
            raise _structure_error(source, f"categories[{i}]", "id", "give every category an integer 'id'")
    for i, ann in enumerate(data.get("annotations", [])):
        if not isinstance(ann, Mapping):
            raise _structure_error(source, f"annotations[{i}]", "object", "every annotation must be a JSON object")
        for key in ("image_id", "category_id"):
            if not isinstance(ann.get(key), int) or isinstance(ann.get(key), bool):
                raise _structure_error(source, f"annotations[{i}] (id {ann.get('id')})", key, "use an integer id")


def probe_image(
    path: Path, image_check: ImageCheck
) -> tuple[tuple[int, int] | None, tuple[int, int] | None, Issue | None]:
    """Open ``path`` as far as ``image_check`` asks.

    Returns:
        (stored size, displayed size, issue): sizes are (width, height) of the pixels as stored and after
        applying the EXIF orientation; both None when the file was not opened (``"none"``) or failed.
    """
    if not path.is_file():
        return None, None, Issue("missing_file", str(path), "file not found")
    if image_check == "none":
        return None, None, None
    try:
        with Image.open(path) as img:
            size = img.size
            orientation = img.getexif().get(_EXIF_ORIENTATION_TAG, 1)
            if image_check == "decode":
                img.load()
    except Image.DecompressionBombError as err:
        return None, None, Issue("oversized_image", str(path), oversized_image_message(path, err))
    except UnidentifiedImageError as err:
        return None, None, Issue("unreadable_image", str(path), f"not an image PIL can read ({err})")
    except (OSError, SyntaxError, ValueError) as err:
        kind = "truncated_image" if image_check == "decode" else "unreadable_image"
        return None, None, Issue(kind, str(path), f"cannot decode: {err}")
    shown = (size[1], size[0]) if orientation in _SWAPPING_ORIENTATIONS else size
    return size, shown, None


def _probe_all(
    files: Sequence[Path], image_check: ImageCheck, workers: int
) -> list[tuple[tuple[int, int] | None, tuple[int, int] | None, Issue | None]]:
    if image_check == "none" or len(files) < 2 * workers:
        return [probe_image(f, image_check) for f in files]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda f: probe_image(f, image_check), files, chunksize=64))


def _json_size(img: Mapping[str, Any]) -> tuple[int, int] | None:
    w, h = img.get("width"), img.get("height")
    if isinstance(w, (int, float)) and isinstance(h, (int, float)) and w > 0 and h > 0:
        return int(w), int(h)
    return None


def _scan_images(
    images: Sequence[Mapping[str, Any]], img_folder: Path, source: str, image_check: ImageCheck, workers: int
) -> tuple[list[Issue], set[int], dict[int, tuple[int, int]], dict[int, bool]]:
    issues: list[Issue] = []
    ids = Counter(img["id"] for img in images)
    issues += [
        Issue("duplicate_image_id", source, f"image id {i} is used by {n} images; give every image a unique id")
        for i, n in ids.items()
        if n > 1
    ]
    names = Counter(img["file_name"] for img in images)
    issues += [
        Issue("duplicate_file_name", str(img_folder / f), f"{n} image entries read this file")
        for f, n in names.items()
        if n > 1
    ]
    skip: set[int] = set()
    sizes: dict[int, tuple[int, int]] = {}
    keep_exif: dict[int, bool] = {}
    files = [img_folder / img["file_name"] for img in images]
    for img, path, (stored, shown, issue) in zip(images, files, _probe_all(files, image_check, workers)):
        declared = _json_size(img)
        if issue is not None:
            issues.append(issue)
            skip.add(img["id"])
            continue
        if shown is None:  # not opened: trust the json
            if declared is not None:
                sizes[img["id"]] = declared
            continue
        if declared is not None and declared != shown and declared == stored:
            keep_exif[img["id"]] = False
            issues.append(
                Issue(
                    "exif_rotated",
                    str(path),
                    f"EXIF rotates it to {shown}, but the json size {declared} matches "
                    "the stored pixels; it is loaded unrotated so that the boxes fit",
                )
            )
            sizes[img["id"]] = stored
            continue
        if declared is not None and declared != shown:
            issues.append(
                Issue(
                    "size_mismatch",
                    str(path),
                    f"json says {declared} (w, h), the file is {shown}; the file wins",
                )
            )
        sizes[img["id"]] = shown
    return issues, skip, sizes, keep_exif


def _annotation_boxes(annotations: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """[N, 4] xywh float64 (NaN rows where malformed) and [N] area (NaN where absent)."""
    boxes = np.full((len(annotations), 4), np.nan)
    areas = np.full(len(annotations), np.nan)
    for i, ann in enumerate(annotations):
        bbox = ann.get("bbox")
        if isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox):
            boxes[i] = bbox
        area = ann.get("area")
        if isinstance(area, (int, float)) and not isinstance(area, bool):
            areas[i] = area
    return boxes, areas


def _check_categories(
    categories: Sequence[Mapping[str, Any]], known: Mapping[int, str] | None, source: str, check_names: bool
) -> tuple[list[Issue], set[int]]:
    issues: list[Issue] = []
    counts = Counter(c["id"] for c in categories)
    issues += [
        Issue("duplicate_category_id", source, f"category id {i} is listed {n} times; list each category once")
        for i, n in counts.items()
        if n > 1
    ]
    if known is None:
        return issues, set(counts)
    for cat in categories if check_names else ():
        name = known.get(cat["id"])
        if name is not None and cat.get("name") not in (None, name):
            issues.append(
                Issue(
                    "category_mismatch",
                    source,
                    f"category id {cat['id']} is '{cat.get('name')}' here but "
                    f"'{name}' in the label map; fix the ids so that both files agree",
                )
            )
    return issues, set(known)


def _duplicate_annotation_ids(annotations: Sequence[Mapping[str, Any]], source: str) -> list[Issue]:
    counts = Counter(ann["id"] for ann in annotations if "id" in ann)
    return [
        Issue("duplicate_annotation", source, f"annotation id {i} is used {n} times; COCO evaluation merges them")
        for i, n in counts.items()
        if n > 1
    ]


def _scan_annotations(
    data: Mapping[str, Any],
    sizes: Mapping[int, tuple[int, int]],
    image_files: Mapping[int, str],
    known_ids: set[int],
    source: str,
) -> tuple[list[Issue], np.ndarray, np.ndarray, np.ndarray]:
    """(issues, usable mask, clipped xyxy boxes, area fields) of the annotations, in order."""
    annotations = data.get("annotations", [])
    issues: list[Issue] = []
    xywh, areas = _annotation_boxes(annotations)
    malformed = ~np.isfinite(xywh).all(axis=1)
    degenerate = ~malformed & ((xywh[:, 2] <= 0) | (xywh[:, 3] <= 0) | (areas <= 0))
    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    keep = ~malformed & ~degenerate
    unknown_cats: Counter[int] = Counter()
    issues += _duplicate_annotation_ids(annotations, source)
    for i, ann in enumerate(annotations):
        where = image_files.get(ann["image_id"], source)
        if ann["image_id"] not in image_files:
            issues.append(
                Issue(
                    "unknown_image_id",
                    source,
                    f"annotation {ann.get('id')} has image_id {ann['image_id']}, which no image has; dropped",
                )
            )
            keep[i] = False
            continue
        if ann["category_id"] not in known_ids:
            unknown_cats[ann["category_id"]] += 1
            keep[i] = False
        if malformed[i]:
            issues.append(
                Issue(
                    "malformed_box",
                    where,
                    f"annotation {ann.get('id')}: bbox {ann.get('bbox')!r} is "
                    "not four finite numbers [x, y, w, h]; dropped",
                )
            )
        elif degenerate[i]:
            issues.append(
                Issue(
                    "degenerate_box",
                    where,
                    f"annotation {ann.get('id')}: bbox {ann.get('bbox')} / "
                    f"area {ann.get('area')} has zero or negative size; dropped",
                )
            )
        elif ann["image_id"] in sizes:
            _clip_box(xyxy, i, sizes[ann["image_id"]], keep, issues, where, ann)
    issues += [
        Issue(
            "unknown_category",
            source,
            f"{n} annotations use category_id {c}, which the label map lacks (its ids: "
            f"{sorted(known_ids)[:20]}); add it to 'categories' or fix the annotations",
        )
        for c, n in sorted(unknown_cats.items())
    ]
    return issues, keep, xyxy, areas


def _clip_box(
    xyxy: np.ndarray,
    i: int,
    size: tuple[int, int],
    keep: np.ndarray,
    issues: list[Issue],
    where: str,
    ann: Mapping[str, Any],
) -> None:
    w, h = size
    box = xyxy[i].copy()
    clipped = np.clip(box, 0, [w, h, w, h])
    xyxy[i] = clipped
    if np.abs(clipped - box).max() <= OUTSIDE_TOLERANCE_PX:
        return
    empty = clipped[2] <= clipped[0] or clipped[3] <= clipped[1]
    keep[i] = keep[i] and not empty
    action = "entirely outside; dropped" if empty else "clipped to the image"
    issues.append(
        Issue(
            "box_outside_image",
            where,
            f"annotation {ann.get('id')}: bbox {ann.get('bbox')} exceeds the {w}x{h} image; {action}",
        )
    )


def _histogram(
    data: Mapping[str, Any], keep: np.ndarray, skip: set[int], names: Mapping[int, str]
) -> tuple[dict[str, int], int, int, int, int]:
    """(histogram by class name, annotations, crowd annotations, images, images without objects)."""
    counts: Counter[int] = Counter()
    crowd = 0
    with_objects: set[int] = set()
    for ann, ok in zip(data.get("annotations", []), keep):
        if not ok or ann["image_id"] in skip:
            continue
        if ann.get("iscrowd", 0):
            crowd += 1
            continue
        counts[ann["category_id"]] += 1
        with_objects.add(ann["image_id"])
    histogram = {names.get(c, str(c)): counts.get(c, 0) for c in sorted(names)}
    kept = [img["id"] for img in data["images"] if img["id"] not in skip]
    return histogram, sum(counts.values()), crowd, len(kept), sum(1 for i in kept if i not in with_objects)


def scan_coco(
    data: Mapping[str, Any],
    img_folder: str | Path,
    *,
    source: str,
    known_categories: Mapping[int, str] | None = None,
    check_names: bool = True,
    image_check: ImageCheck = "header",
    workers: int = DEFAULT_IO_WORKERS,
    prior_issues: Iterable[Issue] = (),
) -> CocoScan:
    """Check a COCO-format dict against its image folder.

    Args:
        data: the parsed json (``images``, ``annotations``, ``categories``).
        img_folder: the folder the images' ``file_name`` are relative to.
        source: the annotation file's name, used in messages.
        known_categories: the label map's ``{category id: name}`` when it is fixed from outside (the
            MS-COCO map, or the training set's map for a validation set); None to use ``categories``.
        check_names: report a ``categories`` entry whose name differs from the label map's for its id
            (off for the MS-COCO table, which maps by id whatever a json calls the class).
        image_check: ``"none"`` (existence only), ``"header"`` (open each image: size, EXIF, format) or
            ``"decode"`` (decode every pixel: also finds truncated files; slow).
        workers: threads for opening images.
        prior_issues: issues found before (e.g. while reading YOLO label files), merged into the report.

    Raises:
        ValueError: if ``data`` is not COCO-shaped (naming the entry and field).
    """
    validate_coco_structure(data, source)
    folder = Path(img_folder)
    issues = list(prior_issues)
    image_issues, skip, sizes, keep_exif = _scan_images(data["images"], folder, source, image_check, workers)
    cat_issues, known_ids = _check_categories(data["categories"], known_categories, source, check_names)
    image_files = {img["id"]: str(folder / img["file_name"]) for img in data["images"]}
    ann_issues, keep, xyxy, areas = _scan_annotations(data, sizes, image_files, known_ids, source)
    names = dict(known_categories) if known_categories is not None else {}
    names.update({c["id"]: str(c.get("name", c["id"])) for c in data["categories"] if c["id"] in known_ids})
    histogram, num_anns, crowd, num_images, negatives = _histogram(data, keep, skip, names)
    report = DatasetReport(
        source=source,
        num_images=num_images,
        num_annotations=num_anns,
        num_crowd=crowd,
        num_negative_images=negatives,
        class_histogram=histogram,
        issues=issues + image_issues + cat_issues + ann_issues,
    )
    return CocoScan(report, skip, sizes, keep_exif, keep, xyxy, areas)

"""Pascal VOC (xml) datasets, read into COCO format in memory.

Layout::

    root/Annotations/x.xml          <filename>, <size>, <object><name>, <difficult>, <bndbox>
    root/JPEGImages/x.jpg
    root/ImageSets/Main/train.txt   one image id (xml stem) per line; without ImageSets every xml is used

VOC boxes are 1-based inclusive pixel indices; the COCO box is ``[xmin - 1, ymin - 1, xmax - xmin + 1,
ymax - ymin + 1]``. Category ids are ``1..C`` in the order of ``classes`` (default: every class name
in ``Annotations/``, sorted, so all splits share one map). VOC "difficult" objects become crowd
regions by default: not training targets, and ignored (neither hit nor miss) by COCO evaluation,
like the VOC metric.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from .check import Issue, probe_image
from .split import DatasetLayout

__all__ = ["voc_class_names", "voc_split_to_coco"]

DifficultMode = Literal["crowd", "keep", "drop"]


def _split_ids(root: Path, split: str) -> list[str]:
    sets = root / "ImageSets" / "Main"
    if not sets.is_dir():
        return sorted(p.stem for p in (root / "Annotations").glob("*.xml"))
    listing = sets / f"{split}.txt"
    if not listing.is_file():
        found = sorted(p.stem for p in sets.glob("*.txt") if "_" not in p.stem)
        raise FileNotFoundError(f"{listing} not found; splits available in {sets}: {found}")
    return [ln.split()[0] for ln in listing.read_text(encoding="utf-8").splitlines() if ln.strip()]


def _parse(xml_file: Path) -> ET.Element:
    try:
        return ET.parse(xml_file).getroot()
    except ET.ParseError as err:
        raise ValueError(f"{xml_file}: not valid XML ({err}); re-export it or remove it from the split") from None


def voc_class_names(root: str | Path) -> list[str]:
    """Every object class name used in ``root/Annotations``, sorted."""
    names = {
        (obj.findtext("name") or "").strip()
        for xml in Path(root).glob("Annotations/*.xml")
        for obj in _parse(xml).iter("object")
    }
    return sorted(n for n in names if n)


def _image_file(root: Path, stem: str, node: ET.Element) -> str:
    filename = (node.findtext("filename") or "").strip()
    if filename and (root / "JPEGImages" / filename).is_file():
        return f"JPEGImages/{filename}"
    return f"JPEGImages/{stem}.jpg"


def _box(obj: ET.Element) -> list[float] | None:
    try:
        xmin, ymin, xmax, ymax = (float(obj.findtext(f"bndbox/{k}") or "") for k in ("xmin", "ymin", "xmax", "ymax"))
    except ValueError:
        return None
    return [xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]


def _size(node: ET.Element, file: Path) -> tuple[int, int] | None:
    try:
        w, h = int(float(node.findtext("size/width") or 0)), int(float(node.findtext("size/height") or 0))
    except ValueError:
        w = h = 0
    if w > 0 and h > 0:
        return w, h
    return probe_image(file, "header")[1]


def _objects(
    node: ET.Element,
    xml_file: Path,
    category_of: dict[str, int],
    difficult: DifficultMode,
    issues: list[Issue],
) -> list[dict[str, Any]]:
    out = []
    for n, obj in enumerate(node.iter("object")):
        name = (obj.findtext("name") or "").strip()
        is_difficult = (obj.findtext("difficult") or "0").strip() == "1"
        if is_difficult and difficult == "drop":
            continue
        box = _box(obj)
        if name not in category_of or box is None:
            why = f"class '{name}' is not in the class list" if box is not None else "bndbox is not four numbers"
            issues.append(Issue("bad_label_line", str(xml_file), f"object {n}: {why}; dropped"))
            continue
        iscrowd = int(is_difficult and difficult == "crowd")
        out.append({"category_id": category_of[name], "bbox": box, "area": box[2] * box[3], "iscrowd": iscrowd})
    return out


def voc_split_to_coco(
    root: str | Path,
    split: str = "train",
    classes: Sequence[str] | None = None,
    difficult: DifficultMode = "crowd",
) -> DatasetLayout:
    """One split of a VOC dataset as a COCO-format dict (``file_name`` relative to ``root``).

    Args:
        root: the folder holding ``Annotations/`` and ``JPEGImages/``.
        split: name of the ``ImageSets/Main`` list.
        classes: class names in label order; default all names found, sorted.
        difficult: ``"crowd"`` (ignored region), ``"keep"`` (ordinary object) or ``"drop"``.
    """
    root = Path(root)
    names = list(classes) if classes is not None else voc_class_names(root)
    category_of = {n: i for i, n in enumerate(names, start=1)}
    issues: list[Issue] = []
    images, annotations = [], []
    for image_id, stem in enumerate(_split_ids(root, split)):
        xml_file = root / "Annotations" / f"{stem}.xml"
        if not xml_file.is_file():
            issues.append(Issue("missing_file", str(xml_file), f"listed in the '{split}' split but not found"))
            continue
        node = _parse(xml_file)
        entry: dict[str, Any] = {"id": image_id, "file_name": _image_file(root, stem, node)}
        size = _size(node, root / entry["file_name"])
        if size is not None:
            entry["width"], entry["height"] = size
        images.append(entry)
        for obj in _objects(node, xml_file, category_of, difficult, issues):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **obj})
    data = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": n} for n, i in category_of.items()],
    }
    return DatasetLayout("voc", root, data, tuple(issues), split=split)

"""YOLO (txt labels + ``data.yaml``) datasets, read into COCO format in memory.

Layout (Ultralytics)::

    root/data.yaml            path: <root>, train: images/train, val: images/val, names: [a, b, ...]
    root/images/train/x.jpg
    root/labels/train/x.txt   one object per line: "class cx cy w h" normalized to [0, 1]
                              (or "class x1 y1 x2 y2 ..." polygon: its bounding box is used)

An image without a label file, or with an empty one, is a negative. Category ids are the YOLO class
indices, names come from ``names``. Image sizes are read from the file headers, with the EXIF
orientation applied (YOLO labels are relative to the upright image).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .check import Issue, probe_image
from .images import IMAGE_EXTENSIONS
from .split import DatasetLayout, split_names

__all__ = ["read_data_yaml", "yolo_split_to_coco"]


def read_data_yaml(path: str | Path) -> tuple[Path, dict[str, Any], dict[int, str]]:
    """Parse a YOLO ``data.yaml``.

    Returns:
        (root, yaml dict, ``{class index: name}``): ``root`` is ``path:`` resolved against the yaml's
        folder (the yaml's folder itself when ``path:`` is absent or does not exist on this machine).
    """
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as f:
            cfg = yaml.safe_load(f) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: expected a mapping with 'train', 'val' and 'names'")
    names = cfg.get("names")
    if isinstance(names, dict):  # {index: name}; indices need not be contiguous
        names = {int(k): str(names[k]) for k in sorted(names, key=int)}
    elif isinstance(names, list):
        names = dict(enumerate(str(n) for n in names))
    if not isinstance(names, dict) or not names:
        raise ValueError(f"{path}: 'names' must be a non-empty list of class names or {{index: name}} mapping")
    if "nc" in cfg and int(cfg["nc"]) != len(names):
        raise ValueError(f"{path}: nc is {cfg['nc']} but 'names' lists {len(names)} classes; make them agree")
    root = path.parent
    if cfg.get("path"):
        candidate = (path.parent / str(cfg["path"])).resolve()
        root = candidate if candidate.is_dir() else root
    return root, cfg, names


def _split_entry(cfg: dict[str, Any], split: str, source: Path) -> tuple[str, list[str]]:
    """The yaml key naming ``split`` (``val`` may be ``valid``...) and its folder or list entries."""
    for key in split_names(split):
        if cfg.get(key):
            value = cfg[key]
            return key, [str(v) for v in value] if isinstance(value, list) else [str(value)]
    raise FileNotFoundError(f"{source}: no '{split}' entry; add e.g. '{split}: images/{split}'")


def _list_split_images(root: Path, entries: list[str], source: Path) -> list[Path]:
    files: list[Path] = []
    for entry in entries:
        location = root / entry
        if location.is_dir():
            files += sorted(p for p in location.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        elif location.is_file() and location.suffix == ".txt":  # list file, one image path per line
            lines = [ln.strip() for ln in location.read_text(encoding="utf-8").splitlines() if ln.strip()]
            files += [(location.parent / ln) if not Path(ln).is_absolute() else Path(ln) for ln in lines]
        else:
            raise FileNotFoundError(
                f"{source}: split entry '{entry}' -> {location} is neither a folder nor a .txt list"
            )
    return files


def label_path(image: Path) -> Path:
    """``.../images/.../x.jpg`` -> ``.../labels/.../x.txt`` (the last ``images`` folder is replaced)."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _parse_line(line: str, names: dict[int, str]) -> tuple[int, list[float]] | str:
    """(class, normalized xyxy) or the reason the line is bad."""
    tokens = line.split()
    try:
        cls = int(tokens[0])
        values = [float(t) for t in tokens[1:]]
    except ValueError:
        return "not numbers"
    if len(values) == 4:
        cx, cy, w, h = values
        box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
    elif len(values) >= 6 and len(values) % 2 == 0:
        xs, ys = values[0::2], values[1::2]
        box = [min(xs), min(ys), max(xs), max(ys)]
    else:
        return f"{len(values)} coordinates (expected 4, or an even number >= 6 for a polygon)"
    if cls not in names:
        return f"class {cls} is not in 'names' ({min(names)}..{max(names)})"
    return cls, box


def _read_labels(
    file: Path, size: tuple[int, int], names: dict[int, str], issues: list[Issue]
) -> list[tuple[int, list[float]]]:
    if not file.is_file():
        return []
    w, h = size
    objects = []
    for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parsed = _parse_line(line, names)
        if isinstance(parsed, str):
            issues.append(Issue("bad_label_line", str(file), f"line {n} '{line.strip()}': {parsed}; dropped"))
            continue
        cls, (x0, y0, x1, y1) = parsed
        objects.append((cls, [x0 * w, y0 * h, (x1 - x0) * w, (y1 - y0) * h]))
    return objects


def yolo_split_to_coco(data_yaml: str | Path, split: str = "train") -> DatasetLayout:
    """One split of a YOLO dataset as a COCO-format dict (``file_name`` relative to the root).

    Raises:
        FileNotFoundError: the yaml has no such split, or its folder / list file is missing.
        ValueError: the yaml is malformed.
    """
    data_yaml = Path(data_yaml)
    root, cfg, names = read_data_yaml(data_yaml)
    key, entries = _split_entry(cfg, split, data_yaml)
    image_files = _list_split_images(root, entries, data_yaml)
    issues: list[Issue] = []
    images, annotations = [], []
    for image_id, file in enumerate(image_files):
        entry: dict[str, Any] = {"id": image_id, "file_name": _relative(file, root)}
        _, size, problem = probe_image(file, "header")
        images.append(entry)
        if problem is not None or size is None:
            continue  # the dataset scan reports the file
        entry["width"], entry["height"] = size
        for cls, bbox in _read_labels(label_path(file), size, names, issues):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cls,
                    "bbox": bbox,
                    "area": bbox[2] * bbox[3],
                    "iscrowd": 0,
                }
            )
    data = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": n} for i, n in names.items()],
    }
    return DatasetLayout("yolo", root, data, tuple(issues), split=key)


def _relative(file: Path, root: Path) -> str:
    try:
        return file.relative_to(root).as_posix()
    except ValueError:
        return str(file.resolve())

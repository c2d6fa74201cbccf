"""``dfine data synth | check | convert``: dataset commands.

:func:`add_data_commands` registers them on an argparse sub-parsers object; each handler is set as the
``run`` default and returns the exit code::

    dfine data synth --out DIR [--train 1000 --val 100 --image-size 320 --seed 0]
    dfine data check DATASET [--split train val] [--img-folder DIR] [--no-decode] [--strict]
    dfine data convert SRC --out DIR [--format yolo|voc] [--split train val] [--classes a,b]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ..data.check import DatasetReport, scan_coco
from ..data.coco import read_coco_json
from ..data.layout import detect_layout, guess_img_folder
from ..data.split import DatasetLayout
from ..data.synthetic import SHAPE_CLASSES, SynthConfig, generate_synthetic_dataset
from ..data.voc import voc_class_names, voc_split_to_coco
from ..data.yolo import read_data_yaml, yolo_split_to_coco

__all__ = ["add_data_commands", "main", "run_check", "run_convert", "run_synth"]

DEFAULT_SPLITS = ("train", "val")
CHECKED_SPLITS = ("train", "val", "test")  # what `data check` looks for ("val" also as "valid" / "validation")
_YOLO_YAMLS = ("data.yaml", "data.yml", "dataset.yaml", "dataset.yml")


def _classes(text: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in text.split(",") if c.strip())


def add_data_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``data`` with its ``synth``, ``check`` and ``convert`` sub-commands to ``subparsers``."""
    data = subparsers.add_parser("data", help="dataset tools: synth, check, convert")
    commands = data.add_subparsers(dest="data_command", required=True, metavar="{synth,check,convert}")

    synth = commands.add_parser("synth", help="generate the synthetic shapes dataset (COCO format)")
    synth.add_argument("--out", type=Path, required=True, help="output folder")
    defaults = SynthConfig()
    synth.add_argument("--train", type=int, default=defaults.num_train, help="train images (default 1000)")
    synth.add_argument("--val", type=int, default=defaults.num_val, help="val images (default 100)")
    synth.add_argument("--image-size", type=int, default=defaults.image_size, help="image side (default 320)")
    synth.add_argument("--seed", type=int, default=defaults.seed, help="random seed (default 0)")
    synth.add_argument(
        "--classes",
        type=_classes,
        default=defaults.classes,
        help=f"comma-separated subset of {SHAPE_CLASSES}",
    )
    synth.add_argument("--max-objects", type=int, default=defaults.max_objects, help="objects per image, at most")
    synth.add_argument(
        "--empty-fraction",
        type=float,
        default=defaults.empty_fraction,
        help="share of images without objects",
    )
    synth.add_argument("--min-object-size", type=int, default=defaults.min_object_size, help="pixels")
    synth.add_argument("--max-object-size", type=int, default=None, help="pixels (default: half the image)")
    synth.set_defaults(run=run_synth)

    check = commands.add_parser("check", help="find problems in a dataset before a long run")
    check.add_argument("dataset", type=Path, help="dataset folder (COCO, YOLO or VOC layout) or a COCO json")
    check.add_argument("--split", nargs="+", help="splits of a folder to check (default: train and val, if present)")
    check.add_argument("--img-folder", type=Path, help="image folder of a json (default: guessed from its path)")
    check.add_argument("--no-decode", action="store_true", help="open image headers only (fast, misses truncation)")
    check.add_argument("--max-list", type=int, default=10, help="problems listed per kind (default 10)")
    check.add_argument("--strict", action="store_true", help="exit 1 on warnings too, not only on errors")
    check.set_defaults(run=run_check)

    convert = commands.add_parser("convert", help="YOLO txt or Pascal VOC xml to COCO json")
    convert.add_argument("source", type=Path, help="YOLO folder (with data.yaml) or VOC folder (Annotations/)")
    convert.add_argument("--out", type=Path, required=True, help="folder for instances_<split>.json")
    convert.add_argument("--format", choices=("yolo", "voc"), help="source format (default: detected)")
    convert.add_argument("--split", nargs="+", help="splits to convert (default: all found)")
    convert.add_argument("--classes", type=_classes, help="VOC: comma-separated class names, in label order")
    convert.add_argument(
        "--voc-difficult",
        choices=("crowd", "keep", "drop"),
        default="crowd",
        help="VOC 'difficult' objects: crowd (ignored region, default), keep, or drop",
    )
    convert.set_defaults(run=run_convert)
    return data


# -- synth ---------------------------------------------------------------------------------------


def run_synth(args: argparse.Namespace) -> int:
    cfg = SynthConfig(
        num_train=args.train,
        num_val=args.val,
        image_size=args.image_size,
        seed=args.seed,
        classes=tuple(args.classes),
        max_objects=args.max_objects,
        empty_fraction=args.empty_fraction,
        min_object_size=args.min_object_size,
        max_object_size=args.max_object_size,
    )
    out = generate_synthetic_dataset(args.out, cfg)
    print(f"wrote {cfg.num_train} train + {cfg.num_val} val images ({len(cfg.classes)} classes) to {out.root}")
    for split in DEFAULT_SPLITS:
        print(f"  {split}: img_folder: {out.img_folder(split)}  ann_file: {out.ann_file(split)}")
    return 0


# -- check ---------------------------------------------------------------------------------------


def _layouts(args: argparse.Namespace) -> list[tuple[str, DatasetLayout]]:
    if args.dataset.is_file():
        folder = args.img_folder or guess_img_folder(args.dataset)
        return [(args.dataset.name, DatasetLayout("coco", folder, args.dataset))]
    splits = args.split or CHECKED_SPLITS
    found = []
    for split in splits:
        try:
            found.append((split, detect_layout(args.dataset, split)))
        except FileNotFoundError:
            if args.split:  # asked for explicitly: a missing split is an error
                raise
    if not found:
        detect_layout(args.dataset, splits[0])  # raises, listing what was looked for
    return found


def _check_layout(layout: DatasetLayout, image_check: str) -> DatasetReport:
    if isinstance(layout.annotations, Path):
        data, source = read_coco_json(layout.annotations), str(layout.annotations)
    else:
        data, source = layout.annotations, f"{layout.kind} dataset in {layout.img_folder}"
    return scan_coco(data, layout.img_folder, source=source, image_check=image_check, prior_issues=layout.issues).report


def run_check(args: argparse.Namespace) -> int:
    image_check = "header" if args.no_decode else "decode"
    failed = False
    for split, layout in _layouts(args):
        report = _check_layout(layout, image_check)
        named = f"{split}, found as '{layout.split}'" if layout.split and layout.split != split else split
        print(f"[{named}] ({layout.kind} layout, images in {layout.img_folder})")
        print(report.format(max_per_kind=args.max_list))
        failed |= bool(report.errors) or (args.strict and bool(report.warnings))
    print("check failed" if failed else "check passed")
    return 1 if failed else 0


# -- convert -------------------------------------------------------------------------------------


def _yolo_splits(source: Path) -> tuple[Path, list[str]]:
    for name in _YOLO_YAMLS:
        if (source / name).is_file():
            _, cfg, _ = read_data_yaml(source / name)
            aliases = {"valid": "val", "validation": "val"}
            splits = [aliases.get(k, k) for k in ("train", "val", "valid", "validation", "test") if cfg.get(k)]
            return source / name, list(dict.fromkeys(splits))
    raise FileNotFoundError(f"{source}: no {' / '.join(_YOLO_YAMLS)}; is this a YOLO dataset?")


def _voc_splits(source: Path) -> list[str]:
    sets = source / "ImageSets" / "Main"
    if not sets.is_dir():
        return ["train"]
    return sorted(p.stem for p in sets.glob("*.txt") if "_" not in p.stem)  # VOC's per-class lists hold "_"


def run_convert(args: argparse.Namespace) -> int:
    source: Path = args.source
    kind = args.format or ("voc" if (source / "Annotations").is_dir() else "yolo")
    if kind == "yolo":
        data_yaml, splits = _yolo_splits(source)
    else:
        splits = _voc_splits(source)
        classes = list(args.classes) if args.classes else voc_class_names(source)
    args.out.mkdir(parents=True, exist_ok=True)
    for split in args.split or splits:
        if kind == "yolo":
            layout = yolo_split_to_coco(data_yaml, split)
        else:
            layout = voc_split_to_coco(source, split, classes=classes, difficult=args.voc_difficult)
        out = args.out / f"instances_{split}.json"
        out.write_text(json.dumps(layout.annotations), encoding="utf-8")
        data = layout.annotations
        print(f"{split}: {len(data['images'])} images, {len(data['annotations'])} objects -> {out}")
        print(f"  img_folder: {layout.img_folder}  ann_file: {out}")
        for issue in layout.issues:
            print(f"  warning {issue.kind}: {issue.where}: {issue.detail}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dfine.cli.data synth|check|convert ...``, the same as ``dfine data ...``."""
    parser = argparse.ArgumentParser(prog="dfine")
    add_data_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""``dfine visualize`` (predictions beside ground truth, as images and an HTML page) and the FiftyOne tool.

``dfine visualize --images DIR --annotations ANN.json --weights CKPT --out OUT`` runs a model (any
backend) on the first images of a COCO-format set, or reads ``--predictions`` (COCO results JSON, as
written by ``dfine predict`` or evaluation), and writes::

    OUT/panels/<image stem>.jpg   ground truth (left) beside the predictions (right)
    OUT/grid.jpg                  the panels tiled, a quick overview
    OUT/index.html                every panel with its box counts, for a browser (no server needed)

``tools/visualization/fiftyone_vis.py -c CONFIG -r CKPT`` loads the config's validation set and the
model's predictions into FiftyOne (``pip install dfine[viz]``) to browse them in its app.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import sys
import zlib
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from ..config.schema import load_train_config
from ..data.coco import CategoryMap, object_categories, read_coco_json
from ..data.images import load_image
from ..deploy.runtime import BackendDetector, open_backend
from ..optional import import_optional
from ..prediction import Prediction
from .arguments import score_threshold
from .export import add_backend_arguments, tool_main, user_errors

__all__ = ["add_visualize_command", "fiftyone_main", "run_visualize"]

GT_COLOR = (40, 220, 60)  # ground-truth boxes: one colour, so they read apart from predictions
PANEL_HEIGHT = 360  # pixels: each side of a panel is scaled to this height
GRID_COLUMNS = 2  # panels per row of grid.jpg
_HEADER = 24  # pixels above each side for its title


def add_visualize_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``dfine visualize`` on the ``dfine`` sub-command parser."""
    parser = subparsers.add_parser("visualize", help="predictions beside ground truth: image grid + HTML page")
    parser.add_argument("--images", type=Path, required=True, help="folder of the dataset's images")
    parser.add_argument("--annotations", type=Path, required=True, help="COCO-format annotation file")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--weights", help="model to run: checkpoint, URL or zoo name, or an exported file with --backend"
    )
    source.add_argument("--predictions", type=Path, help="COCO results JSON to show instead of running a model")
    parser.add_argument("-c", "--config", type=Path, help="torch backend: the checkpoint's YAML config")
    parser.add_argument("--size", type=str.lower, help="torch backend: model size (default: from the checkpoint)")
    parser.add_argument("--device", help="device for the model (default: cuda if available, else cpu)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--max-images", type=int, default=16, help="images shown, in file order (default 16)")
    parser.add_argument(
        "--conf", type=score_threshold, default=0.3, help="score threshold of shown predictions (default 0.3)"
    )
    add_backend_arguments(parser)
    parser.set_defaults(run=user_errors(run_visualize))


def _coco_dataset(images_dir: Path, annotations: Path, max_images: int) -> tuple[list[dict], dict, CategoryMap]:
    """The first ``max_images`` image entries (by file name), their annotations, and the category map."""
    if max_images < 1:
        raise ValueError(f"--max-images must be at least 1, got {max_images}")
    if not images_dir.is_dir():
        raise FileNotFoundError(f"image folder not found: {images_dir}")
    data = read_coco_json(annotations)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not data.get("categories"):
        raise ValueError(f"{annotations}: not a COCO annotation file (needs 'images' and 'categories' lists)")
    entries = sorted(data["images"], key=lambda entry: str(entry.get("file_name", "")))[:max_images]
    if not entries:
        raise ValueError(f"{annotations} lists no images")
    boxes = defaultdict(list)
    for ann in data.get("annotations", []):
        boxes[ann["image_id"]].append(ann)
    return entries, boxes, CategoryMap.from_categories(object_categories(data))


def _predictions_from_file(path: Path, entries: list[dict], cmap: CategoryMap, conf: float) -> dict[int, list[dict]]:
    """COCO results grouped by dataset image id (records with ``image_file`` are matched by file name)."""
    try:
        records = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a list of COCO results (image_id, category_id, bbox, score)")
    by_name = {Path(entry["file_name"]).name: entry["id"] for entry in entries}
    names = cmap.names_by_category
    grouped = defaultdict(list)
    for record in records:
        if record.get("score", 1.0) < conf:
            continue
        image_id = by_name.get(Path(record["image_file"]).name) if "image_file" in record else record.get("image_id")
        name = record.get("category_name") or names.get(record.get("category_id"), str(record.get("category_id")))
        grouped[image_id].append({"bbox": record["bbox"], "name": name, "score": record.get("score", 1.0)})
    return grouped


def _predictions_from_model(args: argparse.Namespace, files: list[Path]) -> dict[int, list[dict]]:
    backend = open_backend(
        args.backend, args.weights, config=args.config, size=args.size, device=args.device, threads=args.threads
    )
    detector = BackendDetector(backend)
    grouped = {}
    for index, prediction in enumerate(detector.iter_predict(files, args.conf, batch_size=4)):
        grouped[index] = [
            {"bbox": [x0, y0, x1 - x0, y1 - y0], "name": name, "score": score}
            for (x0, y0, x1, y1), name, score in zip(
                prediction.boxes.tolist(), prediction.names, prediction.scores.tolist()
            )
        ]
    return grouped


def _titled(image: Image.Image, title: str) -> Image.Image:
    scale = PANEL_HEIGHT / image.height
    resized = image.resize((max(1, round(image.width * scale)), PANEL_HEIGHT), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (resized.width, PANEL_HEIGHT + _HEADER), (255, 255, 255))
    canvas.paste(resized, (0, _HEADER))
    ImageDraw.Draw(canvas).text((4, 6), title, fill=(0, 0, 0))
    return canvas


def _panel(image: Image.Image, truth: list[dict], predicted: list[dict], names: dict) -> Image.Image:
    """Ground truth (left) beside predictions (right), each with a title line."""
    gt_image = image.copy()
    draw = ImageDraw.Draw(gt_image)
    width = max(1, round(max(image.size) / 320))
    for ann in truth:
        x, y, w, h = ann["bbox"]
        draw.rectangle((x, y, x + w, y + h), outline=GT_COLOR, width=width)
        draw.text((x + 2, y + 2), names.get(ann["category_id"], str(ann["category_id"])), fill=GT_COLOR)
    boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (p["bbox"] for p in predicted)]).reshape(-1, 4)
    shown = Prediction(
        boxes=boxes,
        scores=torch.tensor([p["score"] for p in predicted]),
        labels=torch.tensor([zlib.crc32(p["name"].encode()) % 1000 for p in predicted], dtype=torch.int64),  # colour
        names=[p["name"] for p in predicted],
        image_size=image.size,
        image=image,
    )
    left = _titled(gt_image, f"ground truth: {len(truth)} boxes")
    right = _titled(shown.draw(), f"predictions: {len(predicted)} boxes")
    panel = Image.new("RGB", (left.width + right.width + 8, left.height), (255, 255, 255))
    panel.paste(left, (0, 0))
    panel.paste(right, (left.width + 8, 0))
    return panel


def _grid(panels: Sequence[Image.Image]) -> Image.Image:
    width = max(panel.width for panel in panels)
    rows = -(-len(panels) // GRID_COLUMNS)
    grid = Image.new("RGB", (GRID_COLUMNS * (width + 8), rows * (panels[0].height + 8)), (255, 255, 255))
    for index, panel in enumerate(panels):
        row, column = divmod(index, GRID_COLUMNS)
        grid.paste(panel, (column * (width + 8), row * (panels[0].height + 8)))
    return grid


def _html(rows: list[tuple[str, str, int, int]], title: str) -> str:
    cells = "\n".join(
        f'<figure><img src="{html.escape(path)}" loading="lazy"><figcaption>{html.escape(name)}: '
        f"{gt} ground-truth, {pred} predicted</figcaption></figure>"
        for path, name, gt, pred in rows
    )
    return (
        f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:1em}figure{margin:0 0 1.5em}img{max-width:100%}</style>"
        f"</head><body><h1>{html.escape(title)}</h1>\n{cells}\n</body></html>\n"
    )


def run_visualize(args: argparse.Namespace) -> int:
    """Write the panels, grid and HTML page of ``dfine visualize`` (module docstring)."""
    entries, truth, cmap = _coco_dataset(args.images, args.annotations, args.max_images)
    files = [args.images / entry["file_name"] for entry in entries]
    for file in files:
        if not file.is_file():
            raise FileNotFoundError(f"image {file} listed in {args.annotations} not found under {args.images}")
    if args.predictions is not None:
        found = _predictions_from_file(args.predictions, entries, cmap, args.conf)
        predicted = [found.get(entry["id"], []) for entry in entries]
    else:
        found = _predictions_from_model(args, files)
        predicted = [found[index] for index in range(len(entries))]
    out = args.out
    (out / "panels").mkdir(parents=True, exist_ok=True)
    panels, rows = [], []
    names = cmap.names_by_category
    for entry, file, shown in zip(entries, files, predicted):
        panel = _panel(load_image(file), truth.get(entry["id"], []), shown, names)
        relative = f"panels/{Path(entry['file_name']).stem}.jpg"
        panel.save(out / relative, quality=90)
        panels.append(panel)
        rows.append((relative, entry["file_name"], len(truth.get(entry["id"], [])), len(shown)))
    _grid(panels).save(out / "grid.jpg", quality=90)
    title = f"{args.annotations.name}: predictions (score >= {args.conf}) beside ground truth"
    (out / "index.html").write_text(_html(rows, title), encoding="utf-8")
    print(f"wrote {len(panels)} panels, grid.jpg and index.html to {out}")
    return 0


# -------------------------------------------------------------------------------------- FiftyOne


def _fiftyone():
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")  # offline: no usage reporting
    return import_optional("fiftyone", extra="viz", purpose="FiftyOne visualization")


def _to_fiftyone(fo, prediction: Prediction):
    width, height = prediction.image_size
    return fo.Detections(
        detections=[
            fo.Detection(
                label=name,
                bounding_box=[x0 / width, y0 / height, (x1 - x0) / width, (y1 - y0) / height],
                confidence=score,
            )
            for (x0, y0, x1, y1), name, score in zip(
                prediction.boxes.tolist(), prediction.names, prediction.scores.tolist()
            )
        ]
    )


def fiftyone_main(argv: Sequence[str] | None = None) -> int:
    """``tools/visualization/fiftyone_vis.py -c CONFIG -r CKPT``: the val set and predictions in FiftyOne."""
    parser = argparse.ArgumentParser(prog="fiftyone_vis.py", description="browse predictions in FiftyOne")
    parser.add_argument("-c", "--config", type=Path, required=True, help="YAML config (its val set is loaded)")
    parser.add_argument("-r", "--resume", required=True, help="weights: checkpoint (.pth), URL or zoo name")
    parser.add_argument("--images", type=Path, help="image folder (default: the config's val img_folder)")
    parser.add_argument("--annotations", type=Path, help="COCO annotations (default: the config's val ann_file)")
    parser.add_argument("--max-images", type=int, default=200, help="images loaded (default 200)")
    parser.add_argument("--conf", type=score_threshold, default=0.3, help="score threshold (default 0.3)")
    parser.add_argument("-d", "--device", help="device (default: cuda if available, else cpu)")
    parser.add_argument("--name", default="dfine-predictions", help="FiftyOne dataset name (replaced if it exists)")
    parser.add_argument("--port", type=int, default=5151, help="app port (default 5151)")
    parser.add_argument("--no-launch", action="store_true", help="build the dataset only, do not start the app")

    def run(args: argparse.Namespace) -> int:
        fo = _fiftyone()
        dataset_cfg = load_train_config(args.config).val.dataset
        images = args.images or Path(dataset_cfg.img_folder)
        annotations = args.annotations or Path(dataset_cfg.ann_file)
        if not images.is_dir():
            raise FileNotFoundError(f"image folder not found: {images} (set it with --images)")
        if not annotations.is_file():
            raise FileNotFoundError(f"annotation file not found: {annotations} (set it with --annotations)")
            detector = BackendDetector(open_backend("torch", args.resume, config=args.config, device=args.device))
        try:
            dataset = fo.Dataset.from_dir(
                dataset_type=fo.types.COCODetectionDataset,
                data_path=str(images),
                labels_path=str(annotations),
                label_types="detections",
                label_field="ground_truth",
                max_samples=args.max_images,
                name=args.name,
                overwrite=True,
            )
        except Exception as err:  # its database (a bundled mongod) or importer failing: FiftyOne's own types
            raise ValueError(f"FiftyOne could not load the dataset: {' '.join(str(err).split())[:300]}") from None
        for sample in dataset.iter_samples(autosave=True, progress=True):
            (prediction,) = detector.predict(Path(sample.filepath), conf_threshold=args.conf)
            sample["predictions"] = _to_fiftyone(fo, prediction)
        print(f"FiftyOne dataset {args.name!r}: {len(dataset)} images with ground_truth and predictions")
        if not args.no_launch:
            session = fo.launch_app(dataset, port=args.port, auto=False)
            print(f"FiftyOne app at {session.url} (Ctrl+C to stop)", file=sys.stderr)
            session.wait()
        return 0

    return tool_main(parser, run, argv)

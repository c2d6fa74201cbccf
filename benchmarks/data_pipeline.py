"""Training-pipeline throughput: the official COCO train transforms on the synthetic set, on CPU.

Measures, for the dataset + ``train_transforms`` (640x640) + multi-scale collate:

* images/s through a ``DataLoader`` with 0 and 2 workers (all augmentations on, epoch 0), and with 0
  workers after ``stop_epoch`` (photometric distort, zoom-out and IoU crop off, no multi-scale);
* the cost of each step per image: loading (decode + target), every op of the pipeline, the collate;

each for the float pipeline (``ConvertPILImage`` makes float32 in the workers) and the uint8 one the trainer
uses (``keep_uint8=True``: uint8 through augmentation, collate and multi-scale resize; the float conversion
``images_to_device`` is timed too, in the main process, as the trainer does it).

Usage::

    PYTHONPATH=src python benchmarks/data_pipeline.py --images 200 --batch-size 8 --json data.json

The synthetic set is generated into a temporary folder unless ``--data`` points to one (``dfine data
synth`` layout).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from dfine.data.collate import BatchImageCollateFunction
from dfine.data.layout import dataset_from_folder
from dfine.data.schedule import AugmentationSchedule
from dfine.data.synthetic import SynthConfig, generate_synthetic_dataset
from dfine.data.transforms import images_to_device, op_name, train_transforms

STOP_EPOCH = 1  # any epoch: the loader runs epoch 0 (all on) and STOP_EPOCH (stopped ops off)


def _dataset(root: Path, schedule: AugmentationSchedule, images: int, uint8: bool) -> Subset:
    ds = dataset_from_folder(root, "train", train_transforms(schedule=schedule, keep_uint8=uint8))
    return Subset(ds, range(min(images, len(ds))))


def loader_throughput(root: Path, images: int, batch_size: int, workers: int, epoch: int, uint8: bool) -> float:
    """Images per second through the DataLoader for one pass (after one warm-up batch), float batches out."""
    schedule = AugmentationSchedule(stop_epoch=STOP_EPOCH)
    schedule.set_epoch(epoch)
    loader = DataLoader(
        _dataset(root, schedule, images, uint8),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=BatchImageCollateFunction(schedule=schedule),
        drop_last=True,
    )
    seen, start = 0, None
    for batch, _ in loader:
        if start is None:  # the first batch pays for worker start-up
            start = time.perf_counter()
            continue
        seen += images_to_device(batch, torch.device("cpu")).shape[0]
    return seen / (time.perf_counter() - start)


def per_op_cost(root: Path, images: int, batch_size: int, uint8: bool) -> dict[str, float]:
    """Milliseconds per image of loading, each pipeline op (in order), the collate and the float conversion."""
    pipeline = train_transforms(keep_uint8=uint8)
    ds = dataset_from_folder(root, "train")
    collate = BatchImageCollateFunction()
    totals: dict[str, float] = defaultdict(float)
    names = [f"{i}. {op_name(op)}" for i, op in enumerate(pipeline.transforms, start=1)]
    samples = []
    for index in range(min(images, len(ds))):
        t0 = time.perf_counter()
        image, target = ds.load_item(index)
        totals["load (decode + target)"] += time.perf_counter() - t0
        for name, op in zip(names, pipeline.transforms):
            t0 = time.perf_counter()
            image, target = op(image, target)
            totals[name] += time.perf_counter() - t0
        samples.append((image, target))
    t0 = time.perf_counter()
    batches = [collate(samples[i : i + batch_size]) for i in range(0, len(samples) - batch_size + 1, batch_size)]
    totals["collate (stack + multi-scale interpolate)"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    for batch, _ in batches:
        images_to_device(batch, torch.device("cpu"))
    totals["to float on the device (images_to_device)"] += time.perf_counter() - t0
    return {k: 1000 * v / len(samples) for k, v in totals.items()}


def measure(root: Path, images: int, batch_size: int) -> dict:
    """Throughputs and per-step costs of the float and the uint8 pipeline, measured alternately."""
    random.seed(0)
    torch.manual_seed(0)
    cases = (
        ("0 workers, epoch 0 (all augmentations, multi-scale)", 0, 0),
        ("2 workers, epoch 0 (all augmentations, multi-scale)", 2, 0),
        ("0 workers, after stop_epoch (3 ops off, no multi-scale)", 0, 1),
    )
    rows = [
        {
            "loader": name,
            "float_img_s": loader_throughput(root, images, batch_size, workers, epoch, uint8=False),
            "uint8_img_s": loader_throughput(root, images, batch_size, workers, epoch, uint8=True),
        }
        for name, workers, epoch in cases
    ]
    costs = {kind: per_op_cost(root, images, batch_size, kind == "uint8") for kind in ("float", "uint8")}
    return {"rows": rows, "ms_per_image": costs, "images": images, "batch_size": batch_size}


def report(result: dict) -> str:
    steps = list(dict.fromkeys([*result["ms_per_image"]["float"], *result["ms_per_image"]["uint8"]]))
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads in the main process. Synthetic set "
        f"(`dfine data synth`, 320x320 JPEG, ~3 objects per image), {result['images']} images, official COCO train "
        f"transforms to 640x640, `BatchImageCollateFunction` (base 640, repeat 3), batch {result['batch_size']}.",
        "",
        "| loader (float batches out) | float pipeline, images/s | uint8 pipeline, images/s |",
        "| --- | ---: | ---: |",
        *[f"| {r['loader']} | {r['float_img_s']:.1f} | {r['uint8_img_s']:.1f} |" for r in result["rows"]],
        "",
        "| step (0 workers, ms / image) | float | uint8 |",
        "| --- | ---: | ---: |",
        *[
            f"| {step} | {result['ms_per_image']['float'].get(step, 0):.2f} | "
            f"{result['ms_per_image']['uint8'].get(step, 0):.2f} |"
            for step in steps
        ],
        f"| total | {sum(result['ms_per_image']['float'].values()):.2f} | "
        f"{sum(result['ms_per_image']['uint8'].values()):.2f} |",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a synthetic-layout dataset (default: generate one)")
    parser.add_argument("--images", type=int, default=200, help="images per measurement (default 200)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data
        if root is None:
            root = generate_synthetic_dataset(tmp, SynthConfig(num_train=args.images, num_val=0)).root
        result = measure(root, args.images, args.batch_size)
    print(report(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

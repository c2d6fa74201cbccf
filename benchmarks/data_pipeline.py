"""Training-pipeline throughput: the official COCO train transforms on the synthetic set, on CPU.

Measures, for the dataset + ``train_transforms`` (640x640) + multi-scale collate:

* images/s through a ``DataLoader`` with 0 and 2 workers (all augmentations on, epoch 0), and with 0
  workers after ``stop_epoch`` (photometric distort, zoom-out and IoU crop off, no multi-scale);
* the cost of each step per image: loading (decode + target), every op of the pipeline, the collate.

Usage::

    PYTHONPATH=src python benchmarks/data_pipeline.py --images 200 --batch-size 8 \
        --append-results benchmarks/RESULTS.md

The synthetic set is generated into a temporary folder unless ``--data`` points to one (``dfine data
synth`` layout).
"""

from __future__ import annotations

import argparse
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
from dfine.data.transforms import op_name, train_transforms

STOP_EPOCH = 1  # any epoch: the loader runs epoch 0 (all on) and STOP_EPOCH (stopped ops off)


def _dataset(root: Path, schedule: AugmentationSchedule, images: int) -> Subset:
    ds = dataset_from_folder(root, "train", train_transforms(schedule=schedule))
    return Subset(ds, range(min(images, len(ds))))


def loader_throughput(root: Path, images: int, batch_size: int, workers: int, epoch: int) -> float:
    """Images per second through the DataLoader for one pass (after one warm-up batch)."""
    schedule = AugmentationSchedule(stop_epoch=STOP_EPOCH)
    schedule.set_epoch(epoch)
    loader = DataLoader(
        _dataset(root, schedule, images),
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
        seen += batch.shape[0]
    return seen / (time.perf_counter() - start)


def per_op_cost(root: Path, images: int, batch_size: int) -> dict[str, float]:
    """Milliseconds per image of loading, each pipeline op (in order) and the collate."""
    pipeline = train_transforms()
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
    for start in range(0, len(samples) - batch_size + 1, batch_size):
        collate(samples[start : start + batch_size])
    totals["collate (stack + multi-scale interpolate)"] += time.perf_counter() - t0
    return {k: 1000 * v / len(samples) for k, v in totals.items()}


def report(root: Path, images: int, batch_size: int) -> str:
    random.seed(0)
    torch.manual_seed(0)
    rows = [
        ("0 workers, epoch 0 (all augmentations, multi-scale)", loader_throughput(root, images, batch_size, 0, 0)),
        ("2 workers, epoch 0 (all augmentations, multi-scale)", loader_throughput(root, images, batch_size, 2, 0)),
        ("0 workers, after stop_epoch (3 ops off, no multi-scale)", loader_throughput(root, images, batch_size, 0, 1)),
    ]
    costs = per_op_cost(root, images, batch_size)
    lines = [
        "## Data pipeline throughput (benchmarks/data_pipeline.py)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads in the main process. Synthetic set "
        f"(`dfine data synth`, 320x320 JPEG, ~3 objects per image), {images} images, official COCO train "
        f"transforms to 640x640, `BatchImageCollateFunction` (base 640, repeat 3), batch {batch_size}.",
        "",
        "| loader | images/s |",
        "| --- | ---: |",
        *[f"| {name} | {rate:.1f} |" for name, rate in rows],
        "",
        "Cost per image of each step (0 workers, every op applied as at epoch 0; random ops count their",
        "skipped calls too):",
        "",
        "| step | ms / image |",
        "| --- | ---: |",
        *[f"| {name} | {ms:.2f} |" for name, ms in costs.items()],
        f"| total | {sum(costs.values()):.2f} |",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a synthetic-layout dataset (default: generate one)")
    parser.add_argument("--images", type=int, default=200, help="images per measurement (default 200)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--append-results", type=Path, help="append the markdown section to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data
        if root is None:
            root = generate_synthetic_dataset(tmp, SynthConfig(num_train=args.images, num_val=0)).root
        text = report(root, args.images, args.batch_size)
    print(text)
    if args.append_results is not None:
        with args.append_results.open("a", encoding="utf-8") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()

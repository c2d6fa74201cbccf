"""Fine-tuning with ``DFINE.train(data=...)`` from weights of another dataset vs from scratch, at equal epochs.

1. Pretrain D-FINE-N on one synthetic class set (circle, square, triangle; ``--pretrain-images`` images, seed 1) with
   the README demo recipe (``configs/dfine/synthetic/dfine_hgnetv2_n_synthetic.yml``, 12 epochs, 256 px).
2. Fine-tune on a different small set (star, cross — classes the pretrained model never saw — on other backgrounds,
   ``--target-images`` images, seed 2) with the same call twice: ``DFINE.from_pretrained(pretrained).train(...)``
   and ``DFINE("n").train(...)`` with a random backbone (the ImageNet download is not reachable here), same epochs,
   so equal wall time up to the start-up. Prints AP per epoch and the wall time of each run.

Usage::

    python benchmarks/transfer.py WORKDIR --epochs 24 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import dfine
from dfine.data.synthetic import SynthConfig, generate_synthetic_dataset
from dfine.predictor import RandomWeightsWarning

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "configs" / "dfine" / "synthetic" / "dfine_hgnetv2_n_synthetic.yml"
SIDE = 256


def _aps(run: Path) -> list[float]:
    return [json.loads(line)["test_coco_eval_bbox"][0] for line in (run / "log.txt").read_text().splitlines()]


def pretrain(work: Path, images: int) -> Path:
    data = generate_synthetic_dataset(
        work / "pretrain_data",
        SynthConfig(num_train=images, num_val=100, image_size=SIDE, seed=1, classes=("circle", "square", "triangle")),
    )
    run = work / "pretrain"
    overrides = [
        "num_classes=3", f"output_dir={run}",
        f"train_dataloader.dataset.img_folder={data.img_folder('train')}",
        f"train_dataloader.dataset.ann_file={data.ann_file('train')}",
        f"val_dataloader.dataset.img_folder={data.img_folder('val')}",
        f"val_dataloader.dataset.ann_file={data.ann_file('val')}",
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "train.py"), "-c", str(DEMO_CONFIG), "--seed", "0", "-u", *overrides],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    print(f"pretrain: {images} images, 3 classes, {time.perf_counter() - start:.0f} s, AP per epoch {_aps(run)}")
    return run / "best.pth"


def finetune(work: Path, pretrained: Path, images: int, epochs: int) -> dict:
    data = generate_synthetic_dataset(
        work / "target_data",
        SynthConfig(num_train=images, num_val=100, image_size=SIDE, seed=2, classes=("star", "cross")),
    )
    results = {}
    for name in ("from_pretrained", "from_scratch"):
        if name == "from_pretrained":
            detector = dfine.DFINE.from_pretrained(pretrained)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RandomWeightsWarning)
                detector = dfine.DFINE("n")
        start = time.perf_counter()
        result = detector.train(
            data.root, epochs=epochs, image_size=SIDE, batch_size=8, output_dir=work / name, seed=0,
            HGNetv2={"pretrained": False}, print_freq=1000,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        aps = _aps(result.output_dir)
        results[name] = {"wall_s": round(seconds, 1), "best_ap": result.best_ap, "ap_per_epoch": aps}
        print(f"{name}: {seconds:.0f} s, best AP {result.best_ap:.3f}, AP per epoch {[round(a, 3) for a in aps]}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--pretrain-images", type=int, default=800)
    parser.add_argument("--target-images", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    pretrained = args.work / "pretrain" / "best.pth"
    if not pretrained.is_file():
        pretrained = pretrain(args.work, args.pretrain_images)
    results = finetune(args.work, pretrained, args.target_images, args.epochs)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

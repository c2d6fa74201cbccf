"""Train or evaluate on a dataset given as a folder, a YOLO data YAML or a COCO json, without writing a config.

What ``DFINE.train(data=...)``, ``DFINE.val`` and ``dfine train --data`` / ``dfine val --data`` run. The dataset's
layout is detected (:func:`dfine.data.layout.find_dataset`), YOLO and VOC annotations are written as COCO json into
the run folder, the config is made by :func:`dfine.config.recipe.recipe_config` and saved as ``RUN/config.yml``
(the run can be repeated with ``train.py -c RUN/config.yml``), and the run is the one ``train.py`` runs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config.recipe import TrainingRecipe, recipe_config, training_recipe
from ..config.schema import TrainConfig, train_config_from_dict
from ..config.yaml_config import deep_merge
from ..data.coco import CategoryMap, object_categories, read_coco_json
from ..data.layout import DatasetSplits, find_dataset
from ..data.split import DatasetLayout
from .distributed import cleanup_distributed, is_main_process
from .run_log import run_logging
from .setup import RunOptions, build_trainer

__all__ = ["TrainResult", "evaluate_on_data", "train_on_data"]

logger = logging.getLogger("dfine.train")


@dataclass(frozen=True)
class TrainResult:
    """What a training run left.

    Attributes:
        output_dir: the run folder.
        best_checkpoint: ``best.pth`` (the best evaluated weights), or None when no evaluation ran.
        last_checkpoint: ``last.pth`` (resume with ``train(..., resume=True)`` or ``-r``).
        config_file: the run's config (``train.py -c`` repeats it).
        best_ap: the best COCO AP@[.5:.95] on the validation split; epochs_run: epochs trained in total.
        train_time_s: wall time of this call's training, seconds.
        dataset: one line saying how the dataset was read.
        recipe: the numbers the run used.
    """

    output_dir: Path
    best_checkpoint: Path | None
    last_checkpoint: Path
    config_file: Path
    best_ap: float
    epochs_run: int
    train_time_s: float
    dataset: str
    recipe: TrainingRecipe


def _annotations(layout: DatasetLayout) -> dict[str, Any]:
    return read_coco_json(layout.annotations) if isinstance(layout.annotations, Path) else layout.annotations


def _as_files(layout: DatasetLayout, name: str, data_dir: Path) -> tuple[str, str]:
    """``(img_folder, ann_file)`` of a split; converted annotations (YOLO, VOC) are written to ``data_dir``."""
    if isinstance(layout.annotations, Path):
        return str(layout.img_folder), str(layout.annotations)
    data_dir.mkdir(parents=True, exist_ok=True)
    ann_file = data_dir / f"instances_{name}.json"
    ann_file.write_text(json.dumps(layout.annotations))
    for issue in layout.issues[:3]:
        logger.warning("warning: %s: %s", issue.path, issue.message)
    if len(layout.issues) > 3:
        more = len(layout.issues) - 3
        logger.warning("warning: %d more problems in the %s labels; run 'dfine data check'", more, name)
    return str(layout.img_folder), str(ann_file)


def _class_map(splits: DatasetSplits, train: dict[str, Any]) -> CategoryMap:
    """The classes of the training split's annotations ``train``."""
    categories = object_categories(train)
    if not categories:
        raise ValueError(f"{splits.source}: the training split has no categories; it needs at least one class")
    return CategoryMap.from_categories(categories)


def prepare_run(
    data: str | Path,
    *,
    size: str,
    output_dir: str | Path,
    epochs: int | None,
    image_size: int,
    batch_size: int,
    pretrained_backbone: bool,
    num_workers: int = 2,
    overrides: dict[str, Any] | None = None,
    val_split: str | None = None,
) -> tuple[TrainConfig, DatasetSplits, TrainingRecipe, CategoryMap]:
    """The run's config (written to ``output_dir/config.yml`` by the trainer), dataset and recipe (``val_split``: the
    split to evaluate on, default the dataset's validation split)."""
    splits = find_dataset(data, val_split)
    train = _annotations(splits.train)  # read once: its classes and its image count
    classes = _class_map(splits, train)
    output_dir = Path(output_dir)
    images = max(1, len(train.get("images", [])))
    recipe = training_recipe(size, images, image_size=image_size, batch_size=batch_size, epochs=epochs)
    raw = recipe_config(
        recipe,
        num_classes=classes.num_classes,
        train=_as_files(splits.train, "train", output_dir / "data"),
        val=_as_files(splits.val, "val", output_dir / "data"),
        output_dir=str(output_dir),
        pretrained_backbone=pretrained_backbone,
        num_workers=num_workers,
    )
    if overrides:
        raw = deep_merge(raw, overrides)
    return train_config_from_dict(raw, f"the recipe config of {output_dir}"), splits, recipe, classes


def train_on_data(config: TrainConfig, splits: DatasetSplits, recipe: TrainingRecipe, run: RunOptions) -> TrainResult:
    """Train as ``train.py`` does; returns where everything went."""
    run = dataclasses.replace(run, coco_block_on_console=False)  # the compact table instead
    try:
        with run_logging(config.output_dir, enabled=is_main_process()):
            logger.info("%s", splits.describe())
            logger.info("%s", recipe.describe())
            trainer, description = build_trainer(config, run)
            logger.info(
                "training on %s: %d train / %d val images, classes: %s -> %s", description["device"],
                description["train_images"], description["val_images"], ", ".join(description["classes"][:20]),
                config.output_dir,
            )  # fmt: skip
            summary = trainer.fit()
    finally:
        cleanup_distributed()
    output_dir = Path(summary["output_dir"])
    best = output_dir / "best.pth"
    aps = [ap for ap in (summary["best_ap_stage1"], summary["best_ap_stage2"]) if ap is not None and ap >= 0]
    return TrainResult(
        output_dir=output_dir,
        best_checkpoint=best if best.is_file() else None,
        last_checkpoint=output_dir / "last.pth",
        config_file=output_dir / "config.yml",
        best_ap=max(aps, default=-1.0),
        epochs_run=int(summary["epochs_run"]),
        train_time_s=float(summary["train_time_s"]),
        dataset=splits.describe(),
        recipe=recipe,
    )


def evaluate_on_data(config: TrainConfig, checkpoint: str | Path, run: RunOptions) -> dict[str, Any]:
    """COCO metrics of ``checkpoint`` on the config's validation split (the report goes to ``run.output_dir``)."""
    run = dataclasses.replace(run, resume=str(checkpoint), test_only=True, coco_block_on_console=False)
    try:
        with run_logging(run.output_dir, enabled=is_main_process()):
            trainer, _ = build_trainer(config, run)
            result = trainer.evaluate()
    finally:
        cleanup_distributed()
    if result is None:
        raise ValueError("nothing was evaluated: the validation split is empty")
    return {**result.stats, "per_class_ap": dict(result.per_class_ap)}

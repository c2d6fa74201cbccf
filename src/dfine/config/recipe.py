"""The training recipe of ``DFINE.train(data=...)`` and ``dfine train --data``: an official-schema config made from the
size's official COCO recipe, adapted to the dataset's size, the image size and the batch size.

The official configs are written for COCO (118k images, batch 32-128, 72-160 epochs). On a few hundred images the
same numbers leave the run in warm-up, the EMA averaging a window longer than the run, and the augmentation never
switched off. The rules (each tested in ``tests/config/test_recipe.py``):

* **Length**: ``epochs`` when given; else enough epochs for :data:`MIN_STEPS` optimizer steps, at least
  :data:`MIN_EPOCHS`, at most the size's official epoch count.
* **Learning rate**: the official rates (every parameter group) times ``sqrt(batch / official batch)``, the
  square-root scaling rule for Adam-type optimizers (Malladi et al., NeurIPS 2022).
* **Warm-up**: 5% of the run's steps, between 10 and the official 500 (``include/optimizer.yml``).
* **EMA**: decay ``1 - 1 / horizon`` with a horizon of 10% of the run's steps, between 0.99 and the official decay;
  its warm-up ramp 5% of the steps, at most the official 1000. Stage 2 restarts the EMA at the same decay.
* **Augmentation stop** (RandomPhotometricDistort, RandomZoomOut, RandomIoUCrop) and the end of multi-scale
  batches: after the same fraction of the run as the official schedule (N: 148 of 160 epochs, S/M: 120 of 132,
  L/X: 72 of 80), at least one epoch before the end.
* **Queries**: at most the encoder tokens the input size gives (``sum((side / stride)^2)`` over the decoder's
  strides), so a small input never asks for more queries than it has features; denoising queries at most as many.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .presets import MODEL_PRESETS, encoder_tokens, model_config

__all__ = ["MIN_EPOCHS", "MIN_STEPS", "OFFICIAL_TRAINING", "OfficialTraining", "TrainingRecipe", "training_recipe"]

MIN_STEPS = 1500  # optimizer steps a short fine-tune still gets
MIN_EPOCHS = 12
WARMUP_FRACTION, WARMUP_MIN, WARMUP_MAX = 0.05, 10, 500
EMA_HORIZON_FRACTION, EMA_DECAY_MIN, EMA_WARMUP_FRACTION, EMA_WARMUP_MAX = 0.1, 0.99, 0.05, 1000
MAX_QUERIES, MAX_DENOISING = 300, 100


@dataclass(frozen=True)
class OfficialTraining:
    """The official COCO recipe of one size (``configs/dfine/dfine_hgnetv2_{size}_coco.yml`` and its includes)."""

    lr: float
    backbone_lr: float
    weight_decay: float
    batch_size: int
    epochs: int
    stop_epoch: int
    ema_decay: float
    base_size_repeat: int | None
    backbone_norm_group: bool  # N, S, M give the backbone's norms their own (no weight decay) group
    encoder_bias_no_decay: bool  # N, S, M also exempt encoder / decoder biases from weight decay


OFFICIAL_TRAINING: dict[str, OfficialTraining] = {
    "n": OfficialTraining(8e-4, 4e-4, 1e-4, 128, 160, 148, 0.9999, None, True, True),
    "s": OfficialTraining(2e-4, 1e-4, 1e-4, 32, 132, 120, 0.9999, 20, True, True),
    "m": OfficialTraining(2e-4, 2e-5, 1e-4, 32, 132, 120, 0.9999, 6, True, True),
    "l": OfficialTraining(2.5e-4, 1.25e-5, 1.25e-4, 32, 80, 72, 0.9999, 4, False, False),
    "x": OfficialTraining(2.5e-4, 2.5e-6, 1.25e-4, 32, 80, 72, 0.9998, 3, False, False),
}


@dataclass(frozen=True)
class TrainingRecipe:
    """The numbers of one run (see the module docstring for where each comes from)."""

    size: str
    epochs: int
    batch_size: int
    image_size: int
    steps_per_epoch: int
    lr: float
    backbone_lr: float
    warmup_steps: int
    ema_decay: float
    ema_warmups: int
    stop_epoch: int
    num_queries: int
    num_denoising: int

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def describe(self) -> str:
        return (
            f"D-FINE-{self.size.upper()} at {self.image_size} px: {self.epochs} epochs x {self.steps_per_epoch} steps "
            f"of {self.batch_size} images, lr {self.lr:.2e} (backbone {self.backbone_lr:.2e}), warm-up "
            f"{self.warmup_steps} steps, EMA {self.ema_decay:.4f}, augmentation until epoch {self.stop_epoch}, "
            f"{self.num_queries} queries"
        )


def training_recipe(
    size: str, train_images: int, *, image_size: int = 640, batch_size: int = 8, epochs: int | None = None
) -> TrainingRecipe:
    """The recipe for D-FINE-``size`` on ``train_images`` images (module docstring).

    Raises:
        ValueError: an unknown size, an image size that is not a positive multiple of 32, or a count below 1.
    """
    if size not in MODEL_PRESETS:
        raise ValueError(f"unknown model size {size!r}; choose one of {', '.join(MODEL_PRESETS)}")
    if image_size <= 0 or image_size % 32:
        nearest = max(32, round(image_size / 32) * 32)
        raise ValueError(
            f"image_size must be a positive multiple of 32 (the model's stride), got {image_size}: try {nearest}"
        )
    for name, value in (("batch_size", batch_size), ("train_images", train_images)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if epochs is not None and epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    official = OFFICIAL_TRAINING[size]
    steps = max(1, train_images // batch_size)  # the loader drops the last incomplete batch
    if epochs is None:
        epochs = min(official.epochs, max(MIN_EPOCHS, math.ceil(MIN_STEPS / steps)))
    total = epochs * steps
    scale = math.sqrt(batch_size / official.batch_size)
    horizon = max(1.0, EMA_HORIZON_FRACTION * total)
    ema_decay = min(official.ema_decay, max(EMA_DECAY_MIN, 1.0 - 1.0 / horizon))
    no_aug = max(1, round(epochs * (official.epochs - official.stop_epoch) / official.epochs))
    queries = min(MAX_QUERIES, encoder_tokens(model_config(size).decoder, (image_size, image_size)))
    return TrainingRecipe(
        size=size,
        epochs=epochs,
        batch_size=batch_size,
        image_size=image_size,
        steps_per_epoch=steps,
        lr=official.lr * scale,
        backbone_lr=official.backbone_lr * scale,
        warmup_steps=int(min(WARMUP_MAX, max(WARMUP_MIN, round(WARMUP_FRACTION * total)))),
        ema_decay=round(ema_decay, 6),
        ema_warmups=int(min(EMA_WARMUP_MAX, max(1, round(EMA_WARMUP_FRACTION * total)))),
        stop_epoch=max(0, epochs - no_aug),
        num_queries=queries,
        num_denoising=min(MAX_DENOISING, queries),
    )


def _param_groups(size: str, recipe: TrainingRecipe) -> list[dict[str, Any]]:
    """The official regex parameter groups of ``size`` with the recipe's learning rates."""
    official = OFFICIAL_TRAINING[size]
    if official.backbone_norm_group:
        return [
            {"params": "^(?=.*backbone)(?!.*norm|bn).*$", "lr": recipe.backbone_lr},
            {"params": "^(?=.*backbone)(?=.*norm|bn).*$", "lr": recipe.backbone_lr, "weight_decay": 0.0},
            {"params": "^(?=.*(?:encoder|decoder))(?=.*(?:norm|bn|bias)).*$", "weight_decay": 0.0},
        ]
    return [
        {"params": "^(?=.*backbone)(?!.*norm|bn).*$", "lr": recipe.backbone_lr},
        {"params": "^(?=.*(?:encoder|decoder))(?=.*(?:norm|bn)).*$", "weight_decay": 0.0},
    ]


def _train_transforms(stop_epoch: int) -> dict[str, Any]:
    """No ``ops``: the trainer then builds the official pipeline at ``eval_spatial_size`` (``train_transforms``), the
    one place its ops and values live; the policy stops its three strong ops at ``stop_epoch``."""
    return {"type": "Compose", "policy": {"name": "stop_epoch", "epoch": stop_epoch}}


def recipe_config(
    recipe: TrainingRecipe,
    *,
    num_classes: int,
    train: tuple[str, str],
    val: tuple[str, str],
    output_dir: str,
    pretrained_backbone: bool,
    num_workers: int = 2,
) -> dict[str, Any]:
    """The official-schema config dict of ``recipe`` (what ``train.py -c`` would read), saved with the run.

    Args:
        train, val: ``(img_folder, ann_file)`` of each split.
        pretrained_backbone: start the backbone from ImageNet (for a bare size; weights of a detector bring their own).
    """
    official = OFFICIAL_TRAINING[recipe.size]
    preset = model_config(recipe.size)
    side = recipe.image_size
    return {
        "num_classes": num_classes,
        "remap_mscoco_category": False,
        "eval_spatial_size": [side, side],
        "output_dir": output_dir,
        "HGNetv2": {
            "name": preset.backbone.name,
            "return_idx": list(preset.backbone.return_idx),
            "pretrained": pretrained_backbone,
        },  # fmt: skip
        "DFINETransformer": {
            "num_layers": preset.decoder.num_layers,
            "num_queries": recipe.num_queries,
            "num_denoising": recipe.num_denoising,
        },  # fmt: skip
        "DFINEPostProcessor": {"num_top_queries": recipe.num_queries},
        "epoches": recipe.epochs,
        "use_amp": True,  # bf16 only where the CPU computes it natively; fp16 on CUDA
        "use_ema": True,
        "ema": {"type": "ModelEMA", "decay": recipe.ema_decay, "warmups": recipe.ema_warmups, "start": 0},
        "clip_max_norm": 0.1,
        "checkpoint_freq": max(1, recipe.epochs // 4),
        "print_freq": max(1, min(100, recipe.steps_per_epoch // 4)),
        "optimizer": {
            "type": "AdamW",
            "params": _param_groups(recipe.size, recipe),
            "lr": recipe.lr,
            "betas": [0.9, 0.999],
            "weight_decay": official.weight_decay,
        },  # fmt: skip
        "lr_scheduler": {"type": "MultiStepLR", "milestones": [10 * recipe.epochs], "gamma": 0.1},
        "lr_warmup_scheduler": {"type": "LinearWarmup", "warmup_duration": recipe.warmup_steps},
        "train_dataloader": {
            "type": "DataLoader",
            "dataset": {
                "type": "CocoDetection",
                "img_folder": train[0],
                "ann_file": train[1],
                "transforms": _train_transforms(recipe.stop_epoch),
            },  # fmt: skip
            "total_batch_size": recipe.batch_size,
            "num_workers": num_workers,
            "shuffle": True,
            "drop_last": True,
            "collate_fn": {
                "type": "BatchImageCollateFunction",
                "base_size": side,
                "base_size_repeat": official.base_size_repeat,
                "stop_epoch": recipe.stop_epoch,
                "ema_restart_decay": recipe.ema_decay,
            },  # fmt: skip
        },
        "val_dataloader": {
            "type": "DataLoader",
            "dataset": {
                "type": "CocoDetection",
                "img_folder": val[0],
                "ann_file": val[1],
            },  # fmt: skip
            "total_batch_size": recipe.batch_size * 2,
            "num_workers": num_workers,
            "shuffle": False,
            "drop_last": False,
        },
    }

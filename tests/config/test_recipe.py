"""The training recipe of ``DFINE.train(data=...)`` (:mod:`dfine.config.recipe`)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from dfine.config.recipe import (
    MIN_EPOCHS,
    MIN_STEPS,
    OFFICIAL_TRAINING,
    recipe_config,
    training_recipe,
)
from dfine.config.schema import load_train_config, train_config_from_dict

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "dfine"


@pytest.mark.parametrize("size", ["n", "s", "m", "l", "x"])
def test_official_table_is_the_official_configs(size):
    cfg = load_train_config(CONFIGS / f"dfine_hgnetv2_{size}_coco.yml")
    official = OFFICIAL_TRAINING[size]
    assert cfg.optimizer.lr == pytest.approx(official.lr) and cfg.optimizer.weight_decay == pytest.approx(
        official.weight_decay
    )
    assert cfg.optimizer.groups[0].options["lr"] == pytest.approx(official.backbone_lr)
    assert (cfg.train.total_batch_size, cfg.epochs, cfg.train.collate.stop_epoch) == (
        official.batch_size, official.epochs, official.stop_epoch,
    )  # fmt: skip
    assert cfg.train.collate.base_size_repeat == official.base_size_repeat
    assert cfg.train.collate.ema_restart_decay == pytest.approx(official.ema_decay)
    assert (len(cfg.optimizer.groups) == 3) == official.backbone_norm_group


def test_a_small_set_gets_enough_steps_and_short_ramps():
    recipe = training_recipe("s", 200, image_size=640, batch_size=8)
    assert recipe.steps_per_epoch == 25 and recipe.epochs == math.ceil(MIN_STEPS / 25)  # 60 epochs, 1500 steps
    assert recipe.lr == pytest.approx(2e-4 * math.sqrt(8 / 32)) and recipe.backbone_lr == pytest.approx(5e-5)
    assert recipe.warmup_steps == 75  # 5% of 1500
    assert recipe.ema_decay == pytest.approx(1 - 1 / 150) and recipe.ema_warmups == 75
    assert recipe.stop_epoch == 60 - round(60 * 12 / 132)  # the official share of no-augmentation epochs


def test_a_large_set_is_capped_by_the_official_schedule():
    huge = training_recipe("l", 100_000, batch_size=32)
    assert huge.epochs == MIN_EPOCHS and huge.warmup_steps == 500 and huge.ema_warmups == 1000
    assert huge.ema_decay == pytest.approx(1 - 1 / (0.1 * 12 * 3125), abs=1e-6)  # below the official 0.9999
    tiny_batches = training_recipe("x", 10, batch_size=8)
    assert tiny_batches.epochs == OFFICIAL_TRAINING["x"].epochs  # 1 step per epoch: capped at 80
    given = training_recipe("n", 10, epochs=3)
    assert given.epochs == 3 and given.stop_epoch == 2


def test_queries_fit_the_input_size():
    assert training_recipe("n", 100, image_size=640).num_queries == 300
    small = training_recipe("n", 100, image_size=64)  # N decodes strides 16 and 32: 16 + 4 tokens
    assert small.num_queries == 20 and small.num_denoising == 20
    assert training_recipe("s", 100, image_size=64).num_queries == 64 + 16 + 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"image_size": 100}, "multiple of 32.*try 96"), ({"batch_size": 0}, "batch_size must be at least 1"),
     ({"epochs": 0}, "epochs must be at least 1")],
)  # fmt: skip
def test_bad_values_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        training_recipe("n", 10, **kwargs)


def test_the_recipe_config_reads_as_an_official_config(tmp_path):
    recipe = training_recipe("m", 300, image_size=320, batch_size=4, epochs=10)
    raw = recipe_config(recipe, num_classes=7, train=("i", "a.json"), val=("j", "b.json"), output_dir=str(tmp_path),
                        pretrained_backbone=True)  # fmt: skip
    cfg = train_config_from_dict(raw)
    assert cfg.model.num_classes == 7 and cfg.model.backbone.name == "B2" and cfg.pretrained_backbone
    assert cfg.model.decoder.eval_spatial_size == (320, 320) and cfg.epochs == 10
    assert cfg.optimizer.lr == pytest.approx(recipe.lr) and cfg.train.total_batch_size == 4
    assert cfg.train.collate.stop_epoch == recipe.stop_epoch == cfg.train.dataset.policy["epoch"]
    assert cfg.scheduler.warmup_duration == recipe.warmup_steps and cfg.ema.decay == recipe.ema_decay

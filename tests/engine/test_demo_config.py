"""The README demo's config: the values the ~15-minute CPU run relies on, checked without training.

The demo is ``dfine data synth --out data/synthetic`` (the :class:`SynthConfig` defaults) followed
by ``train.py -c configs/dfine/synthetic/dfine_hgnetv2_n_synthetic.yml``; the two must agree.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from dfine.config.schema import TrainConfig, load_train_config
from dfine.data.synthetic import SynthConfig

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "dfine" / "synthetic" / "dfine_hgnetv2_n_synthetic.yml"
DEMO_EPOCHS = 12  # benchmarks/RESULTS.md, "Synthetic demo training (D-FINE-N, CPU)"


@pytest.fixture(scope="module")
def cfg() -> TrainConfig:
    return load_train_config(CONFIG)


def _iterations_per_epoch(cfg: TrainConfig) -> int:
    return SynthConfig().num_train // cfg.train.total_batch_size  # drop_last


def test_classes_and_paths_match_the_generator(cfg):
    assert cfg.model.num_classes == len(SynthConfig().classes)
    assert not cfg.remap_mscoco_category
    assert not cfg.pretrained_backbone  # from scratch: nothing to download
    for split, loader in (("train", cfg.train), ("val", cfg.val)):
        assert loader.dataset.img_folder == f"./data/synthetic/images/{split}"
        assert loader.dataset.ann_file == f"./data/synthetic/annotations/instances_{split}.json"


def test_one_input_size_everywhere(cfg):
    size = cfg.model.decoder.eval_spatial_size[0]
    assert size % 32 == 0 and size <= SynthConfig().image_size  # images are resized down, never up
    assert cfg.model.decoder.eval_spatial_size == (size, size)
    assert cfg.model.encoder.eval_spatial_size == (size, size)
    for loader in (cfg.train, cfg.val):
        resizes = [op["size"] for op in loader.dataset.ops if op["type"] == "Resize"]
        assert resizes == [[size, size]]
    assert cfg.train.collate.base_size == size
    assert cfg.train.collate.base_size_repeat is None  # single scale


def test_queries_fit_the_anchor_grid(cfg):
    decoder = cfg.model.decoder
    side = SynthConfig().image_size
    anchors = sum((side // stride) ** 2 for stride in decoder.feat_strides)
    assert cfg.num_top_queries <= decoder.num_queries <= anchors
    assert decoder.num_queries >= SynthConfig().max_objects


def test_schedule(cfg):
    assert cfg.epochs == DEMO_EPOCHS
    stop = cfg.train.collate.stop_epoch
    assert stop == cfg.epochs  # one stage: the light augmentations run to the end, no EMA restart
    assert cfg.train.dataset.policy["epoch"] == stop  # augmentation and multi-scale stop together
    strong = {"RandomZoomOut", "RandomIoUCrop", "Mosaic"}
    assert not strong & {op["type"] for op in cfg.train.dataset.ops}  # they slow a 12-epoch run down
    iterations = _iterations_per_epoch(cfg)
    assert 0 < cfg.scheduler.warmup_duration <= iterations  # the LR warm-up ends within the first epoch
    assert max(cfg.scheduler.milestones) > cfg.epochs  # no LR step inside the run
    # the EMA ramp (decay * (1 - exp(-t / warmups))) is close to its final decay well before the stop epoch
    assert cfg.ema.enabled and cfg.ema.warmups * 3 < stop * iterations
    assert 1 / (1 - cfg.ema.decay) < cfg.epochs * iterations  # the average forgets the random init within the run
    assert math.isclose(cfg.train.collate.ema_restart_decay, cfg.ema.decay)


def test_loaders(cfg):
    assert cfg.train.num_workers == cfg.val.num_workers == 0
    assert cfg.train.total_batch_size <= SynthConfig().num_train

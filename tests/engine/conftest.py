"""A tiny synthetic dataset and D-FINE-N training config shared by the engine tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dfine.data.synthetic import SynthConfig, generate_synthetic_dataset

IMAGE_SIZE = 160


def tiny_config(data: Path, output_dir: Path, **top: object) -> dict:
    """An N-sized config small enough for a CPU test: 160 px, 50 queries, 2 epochs."""
    resize = {"type": "Resize", "size": [IMAGE_SIZE, IMAGE_SIZE]}
    to_tensor = {"type": "ConvertPILImage", "dtype": "float32", "scale": True}
    config = {
        "num_classes": 5,
        "remap_mscoco_category": False,
        "eval_spatial_size": [IMAGE_SIZE, IMAGE_SIZE],
        "epoches": 2,
        "output_dir": str(output_dir),
        "use_ema": True,
        "ema": {"type": "ModelEMA", "decay": 0.9999, "warmups": 10, "start": 0},
        "clip_max_norm": 0.1,
        "checkpoint_freq": 1,
        "print_freq": 10,
        "HGNetv2": {"name": "B0", "return_idx": [2, 3], "freeze_at": -1, "freeze_norm": False, "use_lab": True,
                    "pretrained": False},
        "HybridEncoder": {"in_channels": [512, 1024], "feat_strides": [16, 32], "hidden_dim": 128,
                          "use_encoder_idx": [1], "dim_feedforward": 512, "expansion": 0.34, "depth_mult": 0.5},
        "DFINETransformer": {"feat_channels": [128, 128], "feat_strides": [16, 32], "hidden_dim": 128,
                             "num_levels": 2, "num_points": [6, 6], "num_layers": 3, "eval_idx": -1,
                             "dim_feedforward": 512, "num_queries": 40, "num_denoising": 20},
        "PostProcessor": {"num_top_queries": 40},
        "optimizer": {
            "type": "AdamW",
            "params": [
                {"params": "^(?=.*backbone)(?!.*norm|bn).*$", "lr": 0.0004},
                {"params": "^(?=.*(?:encoder|decoder))(?=.*(?:norm|bn|bias)).*$", "weight_decay": 0.0},
            ],
            "lr": 0.0008,
            "betas": [0.9, 0.999],
            "weight_decay": 0.0001,
        },
        "lr_scheduler": {"type": "MultiStepLR", "milestones": [500], "gamma": 0.1},
        "lr_warmup_scheduler": {"type": "LinearWarmup", "warmup_duration": 3},
        "train_dataloader": {
            "type": "DataLoader",
            "dataset": {
                "type": "CocoDetection",
                "img_folder": str(data / "images" / "train"),
                "ann_file": str(data / "annotations" / "instances_train.json"),
                "transforms": {
                    "type": "Compose",
                    "ops": [
                        {"type": "RandomPhotometricDistort", "p": 0.5},
                        {"type": "RandomZoomOut", "fill": 0},
                        {"type": "RandomIoUCrop", "p": 0.8},
                        {"type": "SanitizeBoundingBoxes", "min_size": 1},
                        {"type": "RandomHorizontalFlip"},
                        resize,
                        {"type": "SanitizeBoundingBoxes", "min_size": 1},
                        to_tensor,
                        {"type": "ConvertBoxes", "fmt": "cxcywh", "normalize": True},
                    ],
                    "policy": {"name": "stop_epoch", "epoch": 1,
                               "ops": ["RandomPhotometricDistort", "RandomZoomOut", "RandomIoUCrop"]},
                },
            },
            "total_batch_size": 3,
            "num_workers": 0,
            "shuffle": True,
            "drop_last": True,
            "collate_fn": {"type": "BatchImageCollateFunction", "base_size": IMAGE_SIZE, "base_size_repeat": 1,
                           "stop_epoch": 1},
        },
        "val_dataloader": {
            "type": "DataLoader",
            "dataset": {
                "type": "CocoDetection",
                "img_folder": str(data / "images" / "val"),
                "ann_file": str(data / "annotations" / "instances_val.json"),
                "transforms": {"type": "Compose", "ops": [resize, to_tensor]},
            },
            "total_batch_size": 4,
            "num_workers": 0,
            "shuffle": False,
            "drop_last": False,
            "collate_fn": {"type": "BatchImageCollateFunction"},
        },
    }  # fmt: skip
    config.update(top)
    return config


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_dataset(root, SynthConfig(num_train=6, num_val=3, image_size=IMAGE_SIZE, min_object_size=16))
    return root


@pytest.fixture
def tiny_config_file(tiny_data, tmp_path) -> Path:
    path = tmp_path / "tiny.yml"
    path.write_text(yaml.safe_dump(tiny_config(tiny_data, tmp_path / "run")))
    return path

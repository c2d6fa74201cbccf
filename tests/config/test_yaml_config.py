"""YAML includes, overrides and the typed translation with its error messages."""

from __future__ import annotations

import pytest
import yaml

from dfine.config.schema import load_train_config, train_config_from_dict
from dfine.config.yaml_config import ConfigError, apply_overrides, load_yaml_config


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_includes_are_relative_deep_merged_and_later_wins(tmp_path):
    _write(tmp_path / "include" / "base.yml", {"a": 1, "sec": {"x": 1, "y": 2}, "lst": [1, 2]})
    _write(tmp_path / "include" / "more.yml", {"sec": {"y": 3}, "b": 2})
    top = _write(
        tmp_path / "top.yml",
        {"__include__": ["include/base.yml", "include/more.yml"], "sec": {"z": 4}, "lst": [9]},
    )
    merged = load_yaml_config(top)
    assert merged == {"a": 1, "b": 2, "sec": {"x": 1, "y": 3, "z": 4}, "lst": [9]}
    # loading twice shares nothing (the official loader's mutable default merged configs)
    assert load_yaml_config(top) == merged


def test_missing_include_and_cycles_name_the_file(tmp_path):
    top = _write(tmp_path / "top.yml", {"__include__": ["nope.yml"]})
    with pytest.raises(ConfigError, match=r"top.yml: __include__ entry 'nope.yml' not found"):
        load_yaml_config(top)
    _write(tmp_path / "a.yml", {"__include__": ["b.yml"]})
    _write(tmp_path / "b.yml", {"__include__": ["a.yml"]})
    with pytest.raises(ConfigError, match="circular __include__"):
        load_yaml_config(tmp_path / "a.yml")


def test_overrides_are_typed():
    config = apply_overrides(
        {"epoches": 72, "sec": {"lr": 0.1}}, ["epoches=12", "sec.lr=1e-3", "sec.on=true", "l=[1,2]"]
    )
    assert config == {"epoches": 12, "sec": {"lr": 1e-3, "on": True}, "l": [1, 2]}
    with pytest.raises(ConfigError, match="key.path=value"):
        apply_overrides({}, ["epoches"])


def test_input_size_override_sets_every_dependent_value():
    raw = {
        "eval_spatial_size": [640, 640],
        "HybridEncoder": {"eval_spatial_size": [640, 640]},
        "train_dataloader": {
            "dataset": {"transforms": {"ops": [{"type": "Resize", "size": [640, 640]}]}},
            "collate_fn": {"base_size": 640},
        },
        "val_dataloader": {"dataset": {"transforms": {"ops": [{"type": "Resize", "size": [640, 640]}]}}},
    }
    out = apply_overrides(raw, ["input_size=512"])
    assert out["eval_spatial_size"] == [512, 512] and out["HybridEncoder"]["eval_spatial_size"] == [512, 512]
    assert out["train_dataloader"]["dataset"]["transforms"]["ops"][0]["size"] == [512, 512]
    assert out["val_dataloader"]["dataset"]["transforms"]["ops"][0]["size"] == [512, 512]
    assert out["train_dataloader"]["collate_fn"]["base_size"] == 512
    cfg = train_config_from_dict(out)
    assert cfg.model.decoder.eval_spatial_size == (512, 512)
    with pytest.raises(ConfigError, match="multiple of 32"):
        apply_overrides(raw, ["input_size=500"])


def test_unknown_keys_suggest_the_closest(tmp_path):
    path = _write(tmp_path / "bad.yml", {"epoches": 3, "HybridEncoder": {"hiden_dim": 128}})
    with pytest.raises(
        ConfigError,
        match=r"bad.yml \(or one of its includes\): unknown key HybridEncoder.hiden_dim; did you mean 'hidden_dim'",
    ):
        load_train_config(path)
    path = _write(tmp_path / "bad2.yml", {"epochs_": 3})
    with pytest.raises(ConfigError, match="did you mean"):
        load_train_config(path)


def test_wrong_types_name_the_expected_type(tmp_path):
    path = _write(tmp_path / "bad.yml", {"epoches": "many"})
    with pytest.raises(ConfigError, match=r"epoches must be an integer, got str 'many'"):
        load_train_config(path)


def test_official_names_and_readme_custom_config_load(tmp_path):
    """The seed README's custom_detection.yml, verbatim, with its misspelled collate name."""
    readme_custom = """
task: detection

evaluator:
  type: CocoEvaluator
  iou_types: ['bbox', ]

num_classes: 777 # your dataset classes
remap_mscoco_category: False

train_dataloader:
  type: DataLoader
  dataset:
    type: CocoDetection
    img_folder: /data/yourdataset/train
    ann_file: /data/yourdataset/train/train.json
    return_masks: False
    transforms:
      type: Compose
      ops: ~
  shuffle: True
  num_workers: 4
  drop_last: True
  collate_fn:
    type: BatchImageCollateFuncion

val_dataloader:
  type: DataLoader
  dataset:
    type: CocoDetection
    img_folder: /data/yourdataset/val
    ann_file: /data/yourdataset/val/ann.json
    return_masks: False
    transforms:
      type: Compose
      ops: ~
  shuffle: False
  num_workers: 4
  drop_last: False
  collate_fn:
    type: BatchImageCollateFuncion
"""
    path = _write(tmp_path / "custom_detection.yml", readme_custom)
    with pytest.warns(UserWarning, match="BatchImageCollateFuncion"):
        cfg = load_train_config(path)
    assert cfg.model.num_classes == 777 and not cfg.remap_mscoco_category
    assert cfg.train.dataset.img_folder == "/data/yourdataset/train" and cfg.train.dataset.ops is None
    assert cfg.val.num_workers == 4 and not cfg.val.shuffle


@pytest.mark.parametrize("size", ["n", "s", "m", "l", "x"])
def test_official_coco_configs_build_the_official_model(size, fixtures_dir):
    import json

    from dfine.model.dfine import DFINE
    from tests.conftest import REPO_ROOT

    cfg = load_train_config(REPO_ROOT / "configs" / "dfine" / f"dfine_hgnetv2_{size}_coco.yml")
    model = DFINE.from_config(cfg.model)
    manifest = json.loads((fixtures_dir / f"official_keys_{size}.json").read_text())
    assert [(k, list(v.shape)) for k, v in model.state_dict().items()] == list(manifest.items())
    assert cfg.remap_mscoco_category and cfg.num_top_queries == 300


def test_epochs_and_epoches_are_one_key_last_given_wins(tmp_path):
    base = _write(tmp_path / "base.yml", {"epoches": 160})
    child = _write(tmp_path / "child.yml", {"__include__": ["base.yml"], "epochs": 12})
    assert load_yaml_config(child)["epoches"] == 12  # the including file wins, whatever its spelling
    assert "epochs" not in load_yaml_config(child)
    grandchild = _write(tmp_path / "g.yml", {"__include__": ["child.yml"], "epoches": 5})
    assert load_yaml_config(grandchild)["epoches"] == 5
    assert apply_overrides(load_yaml_config(child), ["epochs=1"])["epoches"] == 1  # -u beats both
    assert load_train_config(child, ["epochs=1"]).epochs == 1
    assert load_train_config(base).epochs == 160
    assert train_config_from_dict({"epochs": 7}).epochs == 7  # a dict built in code: the same one key
    with pytest.raises(ConfigError, match="epochs: 7 and epoches: 9 are the same setting"):
        train_config_from_dict({"epochs": 7, "epoches": 9})


def test_one_file_with_both_epoch_spellings_and_different_values_is_refused(tmp_path):
    path = _write(tmp_path / "both.yml", {"epochs": 12, "epoches": 160})
    with pytest.raises(ConfigError, match=r"both.yml: epochs: 12 and epoches: 160 are the same setting"):
        load_yaml_config(path)
    same = _write(tmp_path / "same.yml", {"epochs": 12, "epoches": 12})
    assert load_yaml_config(same) == {"epoches": 12}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("epoches=-2", "epoches must be at least 1, got -2"),
        ("epochs=0", "epoches must be at least 1, got 0"),
        ("train_dataloader.total_batch_size=0", "train_dataloader.total_batch_size must be at least 1, got 0"),
        ("val_dataloader.total_batch_size=-4", "val_dataloader.total_batch_size must be at least 1, got -4"),
        ("train_dataloader.num_workers=-1", "train_dataloader.num_workers must be at least 0, got -1"),
    ],
)
def test_counts_below_their_minimum_are_refused_naming_file_and_field(tmp_path, override, message):
    path = _write(tmp_path / "run.yml", {"epoches": 3})
    with pytest.raises(ConfigError, match=rf"run.yml: {message}"):
        load_train_config(path, [override])


def test_a_scalar_eval_spatial_size_is_a_square_and_other_forms_are_refused(tmp_path):
    cfg = load_train_config(_write(tmp_path / "square.yml", {"epoches": 1, "eval_spatial_size": 256}))
    assert tuple(cfg.model.encoder.eval_spatial_size) == (256, 256)
    assert tuple(cfg.model.decoder.eval_spatial_size) == (256, 256)
    bad = _write(tmp_path / "bad.yml", {"epoches": 1, "DFINETransformer": {"eval_spatial_size": [256]}})
    with pytest.raises(ValueError, match=r"bad.yml: DFINETransformer.eval_spatial_size must be a size N or \[height"):
        load_train_config(bad)


@pytest.mark.parametrize("dataset_type", ["YoloDetection", "Objects365Detection", "VOCDetection"])
def test_a_dataset_type_that_is_not_honoured_is_refused(tmp_path, dataset_type):
    path = _write(tmp_path / "run.yml", {"epoches": 1, "train_dataloader": {"dataset": {"type": dataset_type}}})
    with pytest.raises(ConfigError, match=rf"run.yml: train_dataloader.dataset.type '{dataset_type}' is not supported"):
        load_train_config(path)


def test_a_config_without_a_key_gets_the_dataclass_default():
    """The defaults live in the dataclasses only: an empty config translates to TrainConfig()'s values."""
    import dataclasses

    from dfine.config.schema import DatasetConfig, TrainConfig, train_config_from_dict

    translated, defaults = train_config_from_dict({}, "empty.yml"), TrainConfig()
    nested = {"raw", "source", "model", "train", "val", "criterion", "optimizer", "scheduler", "ema"}
    for f in dataclasses.fields(TrainConfig):
        if f.name not in nested:
            assert getattr(translated, f.name) == getattr(defaults, f.name), f.name
    dataset = translated.train.dataset
    assert (dataset.type, dataset.img_folder, dataset.return_masks) == (
        DatasetConfig.type,
        DatasetConfig.img_folder,
        DatasetConfig.return_masks,
    )

"""The YAML files under ``configs/``: they parse, their includes resolve, and the merged configs carry
the per-size values of the official D-FINE recipes.

Only PyYAML is used (no ``dfine`` import), with a small merge that follows the official rule:
the ``__include__`` files first, in order, then the file itself; nested mappings merge, anything
else is replaced by the later value.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
ALL_YAML = sorted(CONFIGS.rglob("*.yml")) + sorted(CONFIGS.rglob("*.yaml"))

SIZES = ("n", "s", "m", "l", "x")
BACKBONE = {"n": "B0", "s": "B0", "m": "B2", "l": "B4", "x": "B5"}
DECODER_LAYERS = {"n": 3, "s": 3, "m": 4, "l": 6, "x": 6}


def _rel(path: Path) -> str:
    return str(path.relative_to(CONFIGS))


def _read(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return {} if data is None else data


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _includes(path: Path) -> list[str]:
    includes = _read(path).get("__include__") or []
    return [includes] if isinstance(includes, str) else list(includes)


def load_merged(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    assert path not in _seen, f"circular __include__ through {path}"
    merged: dict[str, Any] = {}
    for include in _includes(path):
        merged = _merge(merged, load_merged(path.parent / include, (*_seen, path)))
    own = _read(path)
    own.pop("__include__", None)
    return _merge(merged, own)


def test_configs_tree_is_found() -> None:
    assert (CONFIGS / "runtime.yml").is_file(), f"no configs tree at {CONFIGS}"
    assert len(ALL_YAML) >= 30


@pytest.mark.parametrize("path", ALL_YAML, ids=_rel)
def test_yaml_parses_to_a_mapping(path: Path) -> None:
    assert isinstance(_read(path), dict)


@pytest.mark.parametrize("path", ALL_YAML, ids=_rel)
def test_includes_exist_relative_to_the_including_file(path: Path) -> None:
    for include in _includes(path):
        target = (path.parent / include).resolve()
        assert target.is_file(), f"{_rel(path)}: __include__ {include!r} -> {target} does not exist"


@pytest.mark.parametrize("path", ALL_YAML, ids=_rel)
def test_epoch_count_uses_the_official_key(path: Path) -> None:
    assert "epochs" not in _read(path), f"{_rel(path)}: the official key is 'epoches'"


@pytest.mark.parametrize("size", SIZES)
def test_coco_config_per_size(size: str) -> None:
    cfg = load_merged(CONFIGS / "dfine" / f"dfine_hgnetv2_{size}_coco.yml")
    assert cfg["num_classes"] == 80
    assert cfg["remap_mscoco_category"] is True
    assert cfg["HGNetv2"]["name"] == BACKBONE[size]
    assert cfg["DFINETransformer"]["num_layers"] == DECODER_LAYERS[size]


@pytest.mark.parametrize("size", SIZES)
def test_objects365_configs_per_size(size: str) -> None:
    folder = CONFIGS / "dfine" / "objects365"
    pretrain = load_merged(folder / f"dfine_hgnetv2_{size}_obj365.yml")
    assert pretrain["num_classes"] == 366
    assert pretrain["remap_mscoco_category"] is False
    finetune = load_merged(folder / f"dfine_hgnetv2_{size}_obj2coco.yml")
    assert finetune["num_classes"] == 80
    for cfg in (pretrain, finetune):
        assert cfg["HGNetv2"]["name"] == BACKBONE[size]
        assert cfg["DFINETransformer"]["num_layers"] == DECODER_LAYERS[size]


MODEL_CONFIGS = sorted((CONFIGS / "dfine").rglob("dfine_hgnetv2_*.yml"))


@pytest.mark.parametrize("path", MODEL_CONFIGS, ids=_rel)
def test_augmentation_and_multiscale_stop_together(path: Path) -> None:
    train = load_merged(path)["train_dataloader"]
    assert train["dataset"]["transforms"]["policy"]["epoch"] == train["collate_fn"]["stop_epoch"]


def test_synthetic_config() -> None:
    cfg = load_merged(CONFIGS / "dfine" / "synthetic" / "dfine_hgnetv2_n_synthetic.yml")
    assert cfg["num_classes"] == 5
    assert cfg["remap_mscoco_category"] is False
    assert cfg["eval_spatial_size"] == [256, 256]  # the tuned CPU demo input
    assert cfg["epoches"] == 12
    assert cfg["HGNetv2"] == _merge(
        load_merged(CONFIGS / "dfine" / "dfine_hgnetv2_n_coco.yml")["HGNetv2"], {"pretrained": False}
    )
    for split in ("train", "val"):
        loader = cfg[f"{split}_dataloader"]
        assert loader["total_batch_size"] == 8
        assert loader["num_workers"] == 0
        assert loader["dataset"]["img_folder"] == f"./data/synthetic/images/{split}"
        assert loader["dataset"]["ann_file"] == f"./data/synthetic/annotations/instances_{split}.json"
        resize = [op for op in loader["dataset"]["transforms"]["ops"] if op["type"] == "Resize"]
        assert [op["size"] for op in resize] == [[256, 256]]
    assert cfg["train_dataloader"]["collate_fn"]["base_size"] == 256
    assert cfg["lr_warmup_scheduler"]["warmup_duration"] < cfg["epoches"] * 100  # far shorter than the run


def test_an_input_too_small_for_the_queries_is_refused_before_any_data(tmp_path) -> None:
    from dfine.config.schema import load_train_config
    from dfine.config.yaml_config import ConfigError

    n_config = CONFIGS / "dfine" / "dfine_hgnetv2_n_coco.yml"  # its dataset paths do not exist here: never read
    with pytest.raises(ConfigError, match="num_queries 300 is more than the 20 feature positions of a 64x64 input"):
        load_train_config(n_config, ["eval_spatial_size=[64,64]"])
    fitted = load_train_config(n_config, ["eval_spatial_size=[64,64]", "DFINETransformer.num_queries=20"])
    assert fitted.model.decoder.num_queries == 20

"""The weights zoo table: complete, consistent with the official releases, and searchable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from dfine.hub.zoo import (
    OBJ365_CLASSES,
    OFFICIAL_URL_BASE,
    ZOO,
    UnknownWeightsError,
    available_weights,
    find_weights,
    weights_table,
)
from dfine.model.hgnetv2 import HGNETV2_ARCHS, pretrained_filename

REPO_ROOT = Path(__file__).resolve().parents[2]

# The official README's model zoo tables: zoo name -> released file.
OFFICIAL_FILES = {
    **{f"dfine-{s}-coco": f"dfine_{s}_coco.pth" for s in "nsmlx"},
    **{f"dfine-{s}-obj365": f"dfine_{s}_obj365.pth" for s in "smlx"},
    "dfine-l-obj365-e25": "dfine_l_obj365_e25.pth",
    **{f"dfine-{s}-obj2coco": f"dfine_{s}_obj2coco.pth" for s in "smx"},
    "dfine-l-obj2coco": "dfine_l_obj2coco_e25.pth",
    **{f"hgnetv2-b{i}": f"PPHGNetV2_B{i}_stage1.pth" for i in range(7)},
}


def test_names_are_unique_lowercase_and_listed_in_order():
    names = available_weights()
    assert len(names) == len(set(names)) == len(ZOO)
    assert names == [e.name for e in ZOO]
    assert all(re.fullmatch(r"[a-z0-9-]+", n) for n in names)


def test_every_official_release_is_present_with_its_file_and_url():
    for name, file_name in OFFICIAL_FILES.items():
        entry = find_weights(name)
        assert entry.file_name == file_name
        assert entry.url == f"{OFFICIAL_URL_BASE}/dfinev1.0/{file_name}"
    counts = {(k, d): 0 for k in ("detector", "backbone") for d in ("coco", "obj365", "obj2coco", "imagenet")}
    for e in ZOO:
        if e.kind != "hf":
            counts[e.kind, e.dataset] += 1
    assert counts["detector", "coco"] == 5
    assert counts["detector", "obj365"] >= 4  # S/M/L/X, plus the L (E25) file
    assert counts["detector", "obj2coco"] == 4
    assert counts["backbone", "imagenet"] == 7


def test_fields_are_well_formed():
    for e in ZOO:
        assert e.url.startswith("https://"), e.name
        assert e.kind in ("detector", "backbone", "hf")
        assert e.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", e.sha256)
        assert e.description
        if e.kind == "backbone":
            assert e.size in HGNETV2_ARCHS and e.num_classes is None and e.dataset == "imagenet"
            assert e.file_name == pretrained_filename(e.size)  # what local_model_dir must hold
        else:
            assert e.size in ("n", "s", "m", "l", "x")
            assert e.num_classes == (OBJ365_CLASSES if e.dataset == "obj365" else 80)
            assert (e.coco_ap is None) == (e.dataset == "obj365")


def test_objects365_class_count_matches_the_dataset_config():
    config = yaml.safe_load((REPO_ROOT / "configs" / "dataset" / "obj365_detection.yml").read_text())
    assert config["num_classes"] == OBJ365_CLASSES


def test_hf_ports_name_their_repository():
    ports = [e for e in ZOO if e.kind == "hf"]
    assert len(ports) == 13
    for e in ports:
        assert e.hf_repo_id is not None and e.hf_repo_id.startswith("ustc-community/dfine-")
        assert e.url == f"https://huggingface.co/{e.hf_repo_id}/resolve/main/"
    assert find_weights("dfine-n-coco-hf").hf_repo_id == "ustc-community/dfine-nano-coco"
    assert find_weights("dfine-l-obj2coco-hf").hf_repo_id == "ustc-community/dfine-large-obj2coco-e25"
    assert find_weights("dfine-s-coco").hf_repo_id is None


def test_lookup_ignores_case_and_suggests_close_names():
    assert find_weights("DFINE-S-COCO").name == "dfine-s-coco"
    with pytest.raises(UnknownWeightsError, match="did you mean dfine-s-coco") as info:
        find_weights("dfine-s-cooc")
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)
    with pytest.raises(UnknownWeightsError, match="dfine info --weights"):
        find_weights("yolo")


def test_table_lists_every_entry():
    lines = weights_table().splitlines()
    assert lines[0].split() == ["name", "dataset", "size", "classes", "COCO", "AP", "file"]
    assert len(lines) == len(ZOO) + 2
    row = next(line for line in lines if line.startswith("dfine-x-obj2coco "))
    assert row.split() == ["dfine-x-obj2coco", "obj2coco", "x", "80", "59.3", "dfine_x_obj2coco.pth"]

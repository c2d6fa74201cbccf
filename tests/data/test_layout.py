"""Finding a dataset's format and splits (:mod:`dfine.data.layout`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from dfine.data.layout import find_dataset


def _coco_split(folder: Path, ann_file: Path, images: int = 2) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    entries = []
    for k in range(images):
        Image.new("RGB", (32, 32)).save(folder / f"{k}.jpg")
        entries.append({"id": k + 1, "file_name": f"{k}.jpg", "width": 32, "height": 32})
    data = {"images": entries, "annotations": [], "categories": [{"id": 1, "name": "a"}]}
    ann_file.write_text(json.dumps(data))


def test_roboflow_export_finds_valid(tmp_path):
    for split in ("train", "valid", "test"):
        _coco_split(tmp_path / split, tmp_path / split / "_annotations.coco.json")
    splits = find_dataset(tmp_path)
    assert splits.kind == "roboflow" and splits.val_split == "valid"
    assert splits.val.annotations == tmp_path / "valid" / "_annotations.coco.json"
    assert "roboflow dataset" in splits.describe() and "val (valid)" in splits.describe()


def test_readme_layout_falls_back_to_test_then_train(tmp_path):
    _coco_split(tmp_path / "images" / "train", tmp_path / "annotations" / "instances_train.json")
    assert find_dataset(tmp_path).val_split == "train"  # no val, no test: evaluated on the training images
    assert "no validation split found" in find_dataset(tmp_path).describe()
    _coco_split(tmp_path / "images" / "test", tmp_path / "annotations" / "instances_test.json")
    splits = find_dataset(tmp_path)
    assert (
        splits.kind == "coco" and splits.val_split == "test" and splits.val.img_folder == tmp_path / "images" / "test"
    )


def test_a_coco_json_alone_serves_both_splits(tmp_path):
    _coco_split(tmp_path / "images" / "all", tmp_path / "annotations" / "instances_all.json")
    splits = find_dataset(tmp_path / "annotations" / "instances_all.json")
    assert splits.train == splits.val and splits.train.img_folder == tmp_path / "images" / "all"


def test_a_yolo_yaml_with_valid(tmp_path):
    for split in ("train", "valid"):
        (tmp_path / split / "images").mkdir(parents=True)
        (tmp_path / split / "labels").mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(tmp_path / split / "images" / "x.jpg")
        (tmp_path / split / "labels" / "x.txt").write_text("0 0.5 0.5 0.25 0.25")
    (tmp_path / "data.yaml").write_text("train: train/images\nval: valid/images\nnames: [cat]\n")
    splits = find_dataset(tmp_path / "data.yaml")
    assert splits.kind == "yolo" and splits.val_split == "val"
    assert splits.train.annotations["categories"] == [{"id": 0, "name": "cat"}]


@pytest.mark.parametrize(("name", "message"), [("missing", "dataset not found"), ("notes.txt", "not a dataset")])
def test_what_is_not_a_dataset(tmp_path, name, message):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises((FileNotFoundError, ValueError), match=message):
        find_dataset(tmp_path / name)


def test_a_named_split_is_used_or_refused(tmp_path):
    for split in ("train", "valid", "test"):
        _coco_split(tmp_path / split, tmp_path / split / "_annotations.coco.json")
    assert find_dataset(tmp_path, val_split="test").val.annotations == tmp_path / "test" / "_annotations.coco.json"
    assert find_dataset(tmp_path, val_split="train").val_split == "train"
    with pytest.raises(FileNotFoundError, match="no 'holdout' split found"):
        find_dataset(tmp_path, val_split="holdout")

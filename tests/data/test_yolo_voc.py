"""YOLO and Pascal VOC folders: read as COCO without a converter step, with exact box conversion."""

from __future__ import annotations

import pytest
import torch

from dfine.data.layout import dataset_from_folder, detect_layout
from dfine.data.voc import voc_split_to_coco
from dfine.data.yolo import label_path, yolo_split_to_coco

from .coco_helpers import write_image


def _yolo_tree(root, names_yaml="names: [cat, dog, bird]"):
    write_image(root / "images" / "train" / "a.jpg", (100, 50))
    write_image(root / "images" / "train" / "b.png", (64, 64))
    write_image(root / "images" / "train" / "neg.jpg", (32, 32))  # no label file: a negative
    write_image(root / "images" / "valid" / "v.jpg", (40, 40))
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "valid").mkdir(parents=True)
    (root / "labels" / "train" / "a.txt").write_text(
        "0 0.5 0.5 0.2 0.4\n"  # cx cy w h
        "2 0.1 0.1 0.3 0.1 0.3 0.5 0.1 0.5\n"  # polygon -> its bounding box
        "7 0.5 0.5 0.1 0.1\n"  # class outside names
        "1 0.5 oops 0.1 0.1\n"  # not numbers
    )
    (root / "labels" / "train" / "b.txt").write_text("1 0.25 0.75 0.5 0.5\n\n")
    (root / "labels" / "valid" / "v.txt").write_text("")
    (root / "data.yaml").write_text(f"path: .\ntrain: images/train\nval: images/valid\n{names_yaml}\n")


def test_yolo_split_to_coco_boxes_and_issues(tmp_path):
    _yolo_tree(tmp_path)
    layout = yolo_split_to_coco(tmp_path / "data.yaml", "train")
    data = layout.annotations
    assert layout.kind == "yolo" and layout.img_folder == tmp_path
    assert [img["file_name"] for img in data["images"]] == [
        "images/train/a.jpg",
        "images/train/b.png",
        "images/train/neg.jpg",
    ]
    assert data["categories"] == [{"id": 0, "name": "cat"}, {"id": 1, "name": "dog"}, {"id": 2, "name": "bird"}]
    boxes = {(a["image_id"], a["category_id"]): a["bbox"] for a in data["annotations"]}
    assert boxes[(0, 0)] == pytest.approx([40.0, 15.0, 20.0, 20.0])  # 100x50 image
    assert boxes[(0, 2)] == pytest.approx([10.0, 5.0, 20.0, 20.0])
    assert boxes[(1, 1)] == pytest.approx([0.0, 32.0, 32.0, 32.0])
    kinds = sorted(i.detail.split(": ")[1] for i in layout.issues)
    assert [i.kind for i in layout.issues] == ["bad_label_line", "bad_label_line"]
    assert kinds[0].startswith("class 7 is not in 'names'") and kinds[1].startswith("not numbers")


def test_yolo_folder_is_a_dataset_with_names_and_valid_alias(tmp_path):
    _yolo_tree(tmp_path, names_yaml="names: {0: cat, 1: dog, 2: bird}")
    assert detect_layout(tmp_path, "val").kind == "yolo"
    with pytest.warns(UserWarning, match="bad_label_line: 2"):
        train = dataset_from_folder(tmp_path, "train")
    assert len(train) == 3 and train.class_names == ["cat", "dog", "bird"] and train.category_ids == [0, 1, 2]
    assert train[2][1]["labels"].numel() == 0  # negative kept
    val = dataset_from_folder(tmp_path, "val", category_map=train.category_map)  # yaml says "valid"
    assert len(val) == 1
    assert label_path(tmp_path / "images" / "train" / "a.jpg") == tmp_path / "labels" / "train" / "a.txt"


def test_yolo_names_mapping_may_skip_indices(tmp_path):
    _yolo_tree(tmp_path, names_yaml="names: {0: cat, 2: bird}")  # index 1 unused
    data = yolo_split_to_coco(tmp_path / "data.yaml").annotations
    assert data["categories"] == [{"id": 0, "name": "cat"}, {"id": 2, "name": "bird"}]
    assert {a["category_id"] for a in data["annotations"]} == {0, 2}  # the "1" lines are dropped


def test_yolo_yaml_errors_name_the_fix(tmp_path):
    _yolo_tree(tmp_path, names_yaml="nc: 2\nnames: [a, b, c]")
    with pytest.raises(ValueError, match="nc is 2 but 'names' lists 3"):
        yolo_split_to_coco(tmp_path / "data.yaml")
    (tmp_path / "data.yaml").write_text("train: images/train\nnames: [a]\n")
    with pytest.raises(FileNotFoundError, match="no 'test' entry"):
        yolo_split_to_coco(tmp_path / "data.yaml", "test")


VOC_XML = """<annotation><filename>{name}.jpg</filename><size><width>60</width><height>40</height></size>
{objects}</annotation>"""
VOC_OBJECT = """<object><name>{cls}</name><difficult>{difficult}</difficult>
<bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"""


def _voc_tree(root):
    objects = {
        "x": [("dog", 0, (11, 6, 30, 25)), ("cat", 1, (1, 1, 10, 10))],
        "y": [("cat", 0, (5, 5, 20, "?"))],
        "z": [],
    }
    (root / "Annotations").mkdir(parents=True)
    for name, objs in objects.items():
        write_image(root / "JPEGImages" / f"{name}.jpg", (60, 40))
        body = "".join(VOC_OBJECT.format(cls=c, difficult=d, b=b) for c, d, b in objs)
        (root / "Annotations" / f"{name}.xml").write_text(VOC_XML.format(name=name, objects=body))
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("x\ny\n")
    (root / "ImageSets" / "Main" / "val.txt").write_text("z\n")


def test_voc_split_to_coco_boxes_difficult_and_classes(tmp_path):
    _voc_tree(tmp_path)
    layout = voc_split_to_coco(tmp_path, "train")
    data = layout.annotations
    assert data["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]  # sorted names, 1-based
    dog, cat = data["annotations"]
    assert dog["bbox"] == [10.0, 5.0, 20.0, 20.0]  # 1-based inclusive (11..30) -> x 10, width 20
    assert dog["iscrowd"] == 0 and cat["iscrowd"] == 1  # difficult -> crowd by default
    assert [i.kind for i in layout.issues] == ["bad_label_line"]
    assert len(voc_split_to_coco(tmp_path, "train", difficult="drop").annotations["annotations"]) == 1


def test_voc_folder_is_a_dataset(tmp_path):
    _voc_tree(tmp_path)
    assert detect_layout(tmp_path, "train").kind == "voc"
    with pytest.warns(UserWarning, match="bad_label_line"):
        ds = dataset_from_folder(tmp_path, "train")
    _, target = ds[0]
    assert target["labels"].tolist() == [1]  # the difficult cat is a crowd region: not a target
    torch.testing.assert_close(target["boxes"].as_subclass(torch.Tensor), torch.tensor([[10.0, 5.0, 30.0, 25.0]]))
    with pytest.raises(FileNotFoundError, match="splits available"):
        voc_split_to_coco(tmp_path, "test")

"""CocoDetection and CategoryMap: the label map, the target contract, crowd / negatives, folder layouts."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torchvision import tv_tensors

from dfine.categories import COCO_CATEGORY_IDS, COCO_CLASS_NAMES
from dfine.data.coco import CategoryMap, CocoDetection
from dfine.data.layout import dataset_from_folder, detect_layout
from dfine.data.transforms import train_transforms, val_transforms

from .coco_helpers import ann, cats, write_image

IMAGES = [(1, "a.jpg", 96, 64), (2, "b.jpg", 64, 96), (3, "c.jpg", 80, 80)]


def _no_warnings(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn(*args, **kwargs)


# ---------------------------------------------------------------- the label map


def test_non_contiguous_category_ids_get_contiguous_labels(make_coco):
    # the most reported D-FINE fine-tuning pain: ids like {3, 7, 42} must not need 43 classes
    anns = [ann(1, 1, 42, [10, 10, 20, 20]), ann(2, 1, 3, [30, 20, 10, 10]), ann(3, 2, 7, [5, 5, 30, 40])]
    folder, ann_file = make_coco(IMAGES, anns, cats((42, "zebra"), (3, "ant"), (7, "cat")))
    ds = _no_warnings(CocoDetection, folder, ann_file)
    assert ds.num_classes == 3
    assert ds.category_ids == [3, 7, 42]  # labels follow ascending category id
    assert ds.class_names == ["ant", "cat", "zebra"]
    assert ds.label_to_category == {0: 3, 1: 7, 2: 42}
    assert ds.category_to_label == {3: 0, 7: 1, 42: 2}
    _, target = ds[0]
    assert target["labels"].tolist() == [2, 0]
    back = ds.category_map.labels_to_category_ids(target["labels"])
    assert back.tolist() == [42, 3]
    assert ds.category_map.names_of(target["labels"]) == ["zebra", "ant"]


def test_category_map_round_trip_and_errors():
    cmap = CategoryMap((3, 7, 42), ("ant", "cat", "zebra"))
    assert CategoryMap.from_dict(json.loads(json.dumps(cmap.to_dict()))) == cmap
    with pytest.raises(ValueError, match="num_classes"):
        cmap.labels_to_category_ids(torch.tensor([3]))
    with pytest.raises(ValueError, match="repeat an id"):
        CategoryMap((1, 1), ("a", "b"))
    with pytest.raises(ValueError, match="one name per id"):
        CategoryMap((1, 2), ("a",))


def test_identity_map_keeps_official_raw_id_labels(make_coco):
    # official remap_mscoco_category=False: label = category id (Objects365: ids 1..365, 366 classes)
    categories = cats((1, "Person"), (2, "Sneakers"), (4, "Chair"))
    cmap = CategoryMap.identity(categories)
    assert cmap.num_classes == 5 and cmap.category_ids == (0, 1, 2, 3, 4)
    assert cmap.class_names == ("unused_0", "Person", "Sneakers", "unused_3", "Chair")
    folder, ann_file = make_coco(IMAGES, [ann(1, 1, 4, [1, 1, 9, 9])], categories)
    ds = CocoDetection(folder, ann_file, category_map=cmap)
    assert ds[0][1]["labels"].tolist() == [4]


def test_remap_mscoco_category_uses_the_80_class_table(make_coco):
    anns = [ann(1, 1, 1, [10, 10, 20, 20]), ann(2, 1, 90, [30, 20, 10, 10]), ann(3, 2, 13, [5, 5, 30, 40])]
    # ids decide; a json's own spelling of a name ("stopsign") does not matter for the MS-COCO table
    folder, ann_file = make_coco(IMAGES, anns, cats((1, "person"), (13, "stopsign"), (90, "toothbrush")))
    ds = CocoDetection(folder, ann_file, remap_mscoco_category=True)
    assert ds.num_classes == 80
    assert ds.category_ids == list(COCO_CATEGORY_IDS) and ds.class_names == list(COCO_CLASS_NAMES)
    labels = ds[0][1]["labels"]
    assert labels.tolist() == [0, 79]
    assert ds.category_map.labels_to_category_ids(labels).tolist() == [1, 90]  # back for COCO evaluation
    assert ds[1][1]["labels"].tolist() == [11]  # stop sign: COCO id 13 -> label 11 (id 12 is unused)


def test_remap_mscoco_refuses_ids_outside_coco(make_coco):
    folder, ann_file = make_coco(IMAGES, [ann(1, 1, 12, [1, 1, 5, 5])], cats((12, "street sign")))
    with pytest.raises(ValueError, match="unknown_category.*category_id 12"):
        CocoDetection(folder, ann_file, remap_mscoco_category=True)


def test_validation_set_uses_the_training_map(make_coco, tmp_path):
    folder, train_file = make_coco(IMAGES, [ann(1, 1, 7, [1, 1, 9, 9])], cats((3, "ant"), (7, "cat")))
    train = CocoDetection(folder, train_file)
    # the val json lists only one category: labels must still follow the training map
    _, val_file = make_coco(IMAGES, [ann(1, 1, 7, [1, 1, 9, 9])], cats((7, "cat")), name="val.json")
    val = CocoDetection(folder, val_file, category_map=train.category_map)
    assert val.num_classes == 2 and val[0][1]["labels"].tolist() == [1]
    _, bad_file = make_coco(IMAGES, [ann(1, 1, 7, [1, 1, 9, 9])], cats((7, "dog")), name="bad.json")
    with pytest.raises(ValueError, match="category_mismatch"):
        CocoDetection(folder, bad_file, category_map=train.category_map)


# ---------------------------------------------------------------- the target contract


def test_raw_target_contract_crowd_ignored_negative_kept(make_coco):
    anns = [
        ann(1, 1, 5, [10, 12, 20, 30]),
        ann(2, 1, 5, [0, 0, 50, 50], iscrowd=1),  # crowd: not a training target
        ann(3, 2, 6, [4, 4, 10, 10]),
    ]  # image 3 has no annotation: a negative, kept
    folder, ann_file = make_coco(IMAGES, anns, cats((5, "a"), (6, "b")))
    ds = CocoDetection(folder, ann_file)
    assert len(ds) == 3 and ds.image_ids == [1, 2, 3]
    image, target = ds[0]
    assert image.size == (96, 64) and image.mode == "RGB"
    boxes = target["boxes"]
    assert isinstance(boxes, tv_tensors.BoundingBoxes)
    assert boxes.format == tv_tensors.BoundingBoxFormat.XYXY and boxes.canvas_size == (64, 96)
    torch.testing.assert_close(boxes.as_subclass(torch.Tensor), torch.tensor([[10.0, 12.0, 30.0, 42.0]]))
    assert target["labels"].dtype == torch.int64 and target["labels"].tolist() == [0]
    assert target["image_id"].dtype == torch.int64 and target["image_id"].item() == 1
    assert target["orig_size"].dtype == torch.int64 and target["orig_size"].tolist() == [96, 64]  # (w, h)
    assert target["area"].tolist() == [600.0] and target["iscrowd"].tolist() == [0]
    negative = ds[2][1]
    assert negative["boxes"].shape == (0, 4) and negative["labels"].shape == (0,)


def test_target_contract_after_the_train_pipeline(make_coco):
    anns = [ann(1, 1, 1, [10, 12, 40, 30]), ann(2, 1, 2, [50, 5, 30, 50])]
    folder, ann_file = make_coco(IMAGES, anns, cats((1, "a"), (2, "b")))
    torch.manual_seed(0)
    ds = CocoDetection(folder, ann_file, train_transforms(size=(128, 128)))
    for i in range(len(ds)):
        image, target = ds[i]
        assert image.shape == (3, 128, 128) and image.dtype == torch.float32
        assert image.min() >= 0.0 and image.max() <= 1.0
        boxes = target["boxes"]
        assert isinstance(boxes, tv_tensors.BoundingBoxes) and boxes.format == tv_tensors.BoundingBoxFormat.CXCYWH
        assert boxes.shape[0] == target["labels"].shape[0] == target["area"].shape[0] == target["iscrowd"].shape[0]
        assert ((boxes >= 0) & (boxes <= 1)).all()  # normalized
        assert target["orig_size"].tolist() == [IMAGES[i][2], IMAGES[i][3]]


def test_val_pipeline_keeps_absolute_boxes(make_coco):
    folder, ann_file = make_coco(IMAGES, [ann(1, 1, 1, [12, 8, 24, 16])], cats((1, "a")))
    image, target = CocoDetection(folder, ann_file, val_transforms(size=(64, 64)))[0]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    # 96x64 -> 64x64: x scaled by 2/3, y unchanged
    torch.testing.assert_close(target["boxes"].as_subclass(torch.Tensor), torch.tensor([[8.0, 8.0, 24.0, 24.0]]))


def test_coco_gt_dict_for_evaluation(make_coco):
    anns = [ann(7, 1, 5, [1, 1, 9, 9]), ann(7, 2, 5, [1, 1, 9, 9]), ann(8, 2, 5, [0, 0, 30, 30], iscrowd=1)]
    folder, ann_file = make_coco(IMAGES, anns, cats((5, "a")), skip_files=["c.jpg"])
    with pytest.warns(UserWarning, match="duplicate_annotation"):
        ds = CocoDetection(folder, ann_file)
    gt = ds.coco_gt_dict()
    assert [img["id"] for img in gt["images"]] == [1, 2]  # c.jpg is missing: left out here too
    assert len({a["id"] for a in gt["annotations"]}) == 3  # duplicate ids re-numbered
    assert any(a["iscrowd"] for a in gt["annotations"])  # crowd kept for evaluation
    assert gt["categories"] == [{"id": 5, "name": "a"}]


def test_a_roboflow_export_scores_its_own_ground_truth_as_perfect(make_coco):
    """Roboflow: annotation ids from 0 (COCOeval reads id 0 as "unmatched") and a superclass category."""
    from dfine.engine.evaluate import CocoEvaluator

    categories = [
        {"id": 0, "name": "pets", "supercategory": "none"},
        {"id": 1, "name": "cat", "supercategory": "pets"},
        {"id": 2, "name": "dog", "supercategory": "pets"},
    ]
    anns = [ann(0, 1, 1, [10, 10, 40, 30]), ann(1, 1, 2, [50, 20, 30, 40]), ann(2, 2, 2, [5, 5, 60, 50])]
    folder, ann_file = make_coco(IMAGES[:2], anns, categories)
    ds = CocoDetection(folder, ann_file)
    assert ds.class_names == ["cat", "dog"] and ds.category_ids == [1, 2]  # no phantom "pets" class
    evaluator = CocoEvaluator(ds.coco_gt_dict(), ds.category_ids, ds.class_names)
    for image_id in (1, 2):
        boxes = torch.tensor([[x, y, x + w, y + h] for a in anns if a["image_id"] == image_id
                              for x, y, w, h in [a["bbox"]]], dtype=torch.float32)  # fmt: skip
        labels = torch.tensor([ds.category_ids.index(a["category_id"]) for a in anns if a["image_id"] == image_id])
        evaluator.update([image_id], [{"boxes": boxes, "scores": torch.ones(len(labels)), "labels": labels}])
    stats = evaluator.compute(verbose=False).stats
    assert stats["AP"] == pytest.approx(1.0) and stats["AP50"] == pytest.approx(1.0)


# ---------------------------------------------------------------- folder layouts


def test_from_folder_recognises_the_readme_coco_layout(tmp_path):
    for split in ("train", "val"):
        write_image(tmp_path / "images" / split / "x.jpg", (64, 48))
        data = {
            "images": [{"id": 1, "file_name": "x.jpg", "width": 64, "height": 48}],
            "annotations": [],
            "categories": cats((1, "thing")),
        }
        (tmp_path / "annotations").mkdir(exist_ok=True)
        (tmp_path / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    layout = detect_layout(tmp_path, "val")
    assert layout.kind == "coco" and layout.img_folder == tmp_path / "images" / "val"
    ds = dataset_from_folder(tmp_path, "train")
    assert len(ds) == 1 and ds.class_names == ["thing"]


def test_from_folder_names_what_it_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError, match="instances_train.json"):
        detect_layout(tmp_path, "train")

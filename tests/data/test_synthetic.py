"""The generated shapes dataset: deterministic, COCO-valid, with the promised variety."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from dfine.data.layout import dataset_from_folder
from dfine.data.synthetic import SHAPE_CLASSES, SynthConfig, generate_synthetic_dataset, render_image

TINY = SynthConfig(num_train=12, num_val=4, image_size=96, max_objects=5, empty_fraction=0.1)


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    a = generate_synthetic_dataset(tmp_path / "a", TINY)
    b = generate_synthetic_dataset(tmp_path / "b", TINY)
    c = generate_synthetic_dataset(tmp_path / "c", SynthConfig(**{**TINY.__dict__, "seed": 1}))
    assert _files(a.root) == _files(b.root)
    assert a.ann_file("train").read_bytes() != c.ann_file("train").read_bytes()


def test_layout_and_coco_contents(tmp_path):
    out = generate_synthetic_dataset(tmp_path, TINY)
    for split, count in (("train", 12), ("val", 4)):
        data = json.loads(out.ann_file(split).read_text())
        assert len(data["images"]) == count == len(list(out.img_folder(split).glob("*.jpg")))
        assert [c["name"] for c in data["categories"]] == list(SHAPE_CLASSES)
        assert [c["id"] for c in data["categories"]] == [1, 2, 3, 4, 5]
        with_objects = {a["image_id"] for a in data["annotations"]}
        assert len(with_objects) < count  # at least one negative image per split
        for a in data["annotations"]:
            x, y, w, h = a["bbox"]
            assert x >= 0 and y >= 0 and x + w <= 96.01 and y + h <= 96.01 and w > 0 and h > 0
            assert 0 < a["area"] <= w * h + 1e-6  # shape area, within its box
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean set: no problem reported
        ds = dataset_from_folder(tmp_path, "train", image_check="decode")
    assert ds.num_classes == 5 and len(ds) == 12


def test_variety_of_classes_sizes_and_overlaps():
    cfg = SynthConfig(image_size=320)
    sizes, labels, overlaps = [], set(), 0
    for i in range(60):
        _, objects = render_image(np.random.default_rng([0, 0, i]), cfg, empty=False)
        boxes = [o["bbox"] for o in objects]
        labels |= {o["category_id"] for o in objects}
        sizes += [max(b[2], b[3]) for b in boxes]
        overlaps += sum(
            1
            for j, p in enumerate(boxes)
            for q in boxes[j + 1 :]
            if min(p[0] + p[2], q[0] + q[2]) > max(p[0], q[0]) and min(p[1] + p[3], q[1] + q[3]) > max(p[1], q[1])
        )
    sizes = np.array(sizes)
    assert labels == {1, 2, 3, 4, 5}
    assert (sizes < 32).mean() > 0.05 and (sizes >= 32).mean() > 0.7  # some small, mostly medium / large
    assert sizes.max() > 120 and overlaps > 0


def test_config_is_checked():
    with pytest.raises(ValueError, match="pick distinct names"):
        SynthConfig(classes=("circle", "hexagon"))
    with pytest.raises(ValueError, match="min_objects <= max_objects"):
        SynthConfig(min_objects=3, max_objects=2)
    with pytest.raises(ValueError, match="do not fit"):
        SynthConfig(image_size=64, min_object_size=40)

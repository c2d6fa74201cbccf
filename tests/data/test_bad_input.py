"""Bad input is refused before the first step or skipped with one summary warning, never a crash mid-epoch.

Each case is planted in a tiny dataset; the same cases through ``scan_coco`` (what ``dfine data check``
prints) are in ``test_check.py``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from dfine.data.coco import CocoDetection
from dfine.data.collate import BatchImageCollateFunction
from dfine.data.transforms import train_transforms

from .coco_helpers import ann, cats, write_image

GOOD = [(1, "ok1.jpg", 64, 64), (2, "ok2.jpg", 64, 48)]
CATS = cats((1, "a"), (2, "b"))
EXIF_ORIENTATION = 0x0112


def _build(folder, ann_file, **kwargs):
    """The dataset and the warnings its constructor raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = CocoDetection(folder, ann_file, **kwargs)
    return ds, [str(w.message) for w in caught]


def _run_epoch(ds: CocoDetection) -> int:
    """One training epoch through the real pipeline and collate; returns the images seen."""
    ds.transforms = train_transforms(size=(64, 64))
    loader = DataLoader(ds, batch_size=2, collate_fn=BatchImageCollateFunction(base_size=64, base_size_repeat=1))
    return sum(images.shape[0] for images, _ in loader)


def test_missing_and_unreadable_files_are_left_out_with_one_warning(make_coco, tmp_path):
    images = [*GOOD, (3, "gone.jpg", 64, 64), (4, "text.jpg", 64, 64)]
    folder, ann_file = make_coco(images, [ann(1, 3, 1, [1, 1, 9, 9])], CATS, skip_files=["gone.jpg", "text.jpg"])
    (folder / "text.jpg").write_text("not an image")
    ds, messages = _build(folder, ann_file)
    assert len(messages) == 1  # one summary, naming how many and which files
    assert "2 image(s) left out" in messages[0]
    assert "missing_file: 1" in messages[0] and "gone.jpg" in messages[0]
    assert "unreadable_image: 1" in messages[0] and "text.jpg" in messages[0]
    assert len(ds) == 2 and ds.image_ids == [1, 2]
    assert _run_epoch(ds) == 2


def test_truncated_image_is_found_by_decode_or_replaced_when_loaded(make_coco):
    images = [*GOOD, (3, "cut.jpg", 64, 64)]
    folder, ann_file = make_coco(images, [ann(1, 3, 1, [1, 1, 9, 9])], CATS)
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "cut.jpg", quality=95)  # pixel data far larger than the header
    data = (folder / "cut.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(data[: len(data) // 2])
    # decode check at construction: left out before the first step
    ds, messages = _build(folder, ann_file, image_check="decode")
    assert len(ds) == 2 and "truncated_image: 1" in messages[0]
    # header check only: the header is fine, so the file is found when loaded, and replaced
    ds, messages = _build(folder, ann_file, image_check="header")
    assert len(ds) == 3 and not messages
    with pytest.warns(UserWarning, match=r"cut\.jpg: cannot be loaded.*another image"):
        image, target = ds[2]
    assert target["image_id"].item() == 1  # the next image, wrapping around
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _run_epoch(ds) == 3  # the epoch completes


def test_boxes_outside_the_image_are_clipped_or_dropped(make_coco):
    anns = [
        ann(1, 1, 1, [50, 50, 30, 30]),  # 64x64 image: clipped to [50, 50, 64, 64]
        ann(2, 1, 1, [70, 70, 10, 10]),  # entirely outside: dropped
        ann(3, 1, 2, [-0.4, 0, 10, 64.5]),  # within the rounding tolerance: clipped silently
    ]
    folder, ann_file = make_coco(GOOD, anns, CATS)
    ds, messages = _build(folder, ann_file)
    assert len(messages) == 1 and "box_outside_image: 2" in messages[0]
    boxes = ds[0][1]["boxes"].as_subclass(torch.Tensor)
    torch.testing.assert_close(boxes, torch.tensor([[50.0, 50.0, 64.0, 64.0], [0.0, 0.0, 9.6, 64.0]]))


def test_zero_negative_and_malformed_boxes_are_dropped(make_coco):
    anns = [
        ann(1, 1, 1, [5, 5, 0, 10]),  # zero width
        ann(2, 1, 1, [5, 5, 10, -3]),  # negative height
        ann(3, 1, 1, [5, 5, 10, 10], area=0),  # zero area field
        {**ann(4, 1, 1, [5, 5, 10, 10]), "bbox": [5, 5, 10]},  # three numbers
        {**ann(5, 1, 1, [5, 5, 10, 10]), "bbox": [5, 5, "x", 10]},  # not a number
        ann(6, 1, 1, [5, 5, 10, 10]),
    ]
    folder, ann_file = make_coco(GOOD, anns, CATS)
    ds, messages = _build(folder, ann_file)
    assert "degenerate_box: 3" in messages[0] and "malformed_box: 2" in messages[0]
    assert ds[0][1]["labels"].tolist() == [0]
    assert _run_epoch(ds) == 2


def test_unknown_category_is_refused_before_training(make_coco):
    folder, ann_file = make_coco(GOOD, [ann(1, 1, 9, [1, 1, 9, 9]), ann(2, 2, 9, [1, 1, 9, 9])], CATS)
    with pytest.raises(ValueError) as err:
        CocoDetection(folder, ann_file)
    message = str(err.value)
    assert str(ann_file) in message  # names the file
    assert "2 annotations use category_id 9" in message  # the field
    assert "add it to 'categories'" in message  # and the fix


def test_duplicate_ids_are_refused_or_reported(make_coco):
    folder, ann_file = make_coco([*GOOD, (2, "ok3.jpg", 64, 64)], [], CATS)
    with pytest.raises(ValueError, match="image id 2 is used by 2 images"):
        CocoDetection(folder, ann_file)
    folder, ann_file = make_coco(GOOD, [], [*CATS, {"id": 2, "name": "b"}], name="dup_cat.json")
    with pytest.raises(ValueError, match="category id 2 is listed 2 times"):
        CocoDetection(folder, ann_file)


def test_annotation_of_unknown_image_is_dropped(make_coco):
    folder, ann_file = make_coco(GOOD, [ann(1, 99, 1, [1, 1, 9, 9]), ann(2, 1, 1, [1, 1, 9, 9])], CATS)
    ds, messages = _build(folder, ann_file)
    assert "unknown_image_id: 1" in messages[0] and len(ds[0][1]["labels"]) == 1


def test_structural_errors_name_the_entry_and_field(make_coco, tmp_path):
    folder, ann_file = make_coco(GOOD, [ann(1, 1, 1, [1, 1, 9, 9])], CATS)
    broken = tmp_path / "broken.json"
    broken.write_text(ann_file.read_text().replace('"image_id": 1', '"image_id": "1"'))
    with pytest.raises(ValueError, match=r"annotations\[0\] \(id 1\) has no valid 'image_id'"):
        CocoDetection(folder, broken)
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        CocoDetection(folder, broken)
    with pytest.raises(FileNotFoundError, match="check ann_file"):
        CocoDetection(folder, tmp_path / "nope.json")


def test_size_mismatch_uses_the_real_size(make_coco):
    folder, ann_file = make_coco([(1, "ok1.jpg", 64, 64)], [ann(1, 1, 1, [40, 40, 30, 30])], CATS)
    write_image(folder / "ok1.jpg", (48, 48))  # smaller than the json says
    ds, messages = _build(folder, ann_file)
    assert "size_mismatch: 1" in messages[0]
    _, target = ds[0]
    assert target["orig_size"].tolist() == [48, 48]
    torch.testing.assert_close(target["boxes"].as_subclass(torch.Tensor), torch.tensor([[40.0, 40.0, 48.0, 48.0]]))


def _exif_image(path, stored_size):
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # displayed rotated by 90 degrees: width and height swap
    Image.new("RGB", stored_size, (200, 30, 30)).save(path, exif=exif, quality=95)


def test_exif_orientation_follows_the_json_size(make_coco):
    folder, ann_file = make_coco([(1, "raw.jpg", 40, 20), (2, "upright.jpg", 20, 40)], [], CATS)
    _exif_image(folder / "raw.jpg", (40, 20))
    _exif_image(folder / "upright.jpg", (40, 20))
    ds, messages = _build(folder, ann_file)
    assert "exif_rotated: 1" in messages[0] and "raw.jpg" in messages[0]
    assert ds[0][0].size == (40, 20)  # json matches the stored pixels: loaded unrotated
    assert ds[1][0].size == (20, 40)  # json matches the upright view: EXIF applied

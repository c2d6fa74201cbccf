"""scan_coco / DatasetReport: what ``dfine data check`` reports, planted case by case."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from dfine.data.check import scan_coco

from .coco_helpers import ann, cats


def _planted(make_coco):
    images = [
        (1, "ok.jpg", 64, 64),
        (2, "neg.jpg", 64, 64),
        (3, "gone.jpg", 64, 64),
        (4, "bad.jpg", 64, 64),
        (5, "cut.jpg", 64, 64),
        (5, "dup.jpg", 64, 64),
    ]
    anns = [
        ann(1, 1, 1, [1, 1, 20, 20]),
        ann(2, 1, 2, [50, 50, 30, 30]),  # outside
        ann(3, 1, 1, [1, 1, 0, 5]),  # zero area
        ann(3, 1, 9, [1, 1, 5, 5]),  # unknown category, duplicate annotation id
        {**ann(4, 1, 1, [1, 1, 5, 5]), "bbox": None},  # malformed
    ]
    folder, ann_file = make_coco(images, anns, cats((1, "a"), (2, "b")), skip_files=["gone.jpg"])
    (folder / "bad.jpg").write_bytes(b"GIF89a?")
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "cut.jpg", quality=95)
    data = (folder / "cut.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(data[: len(data) // 2])
    return folder, ann_file


def test_every_planted_problem_is_reported(make_coco):
    folder, ann_file = _planted(make_coco)
    report = scan_coco(json.loads(ann_file.read_text()), folder, source=str(ann_file), image_check="decode").report
    kinds = {kind: len(issues) for kind, issues in report.by_kind().items()}
    assert kinds == {
        "duplicate_image_id": 1,
        "missing_file": 1,
        "unreadable_image": 1,
        "truncated_image": 1,
        "box_outside_image": 1,
        "degenerate_box": 1,
        "malformed_box": 1,
        "unknown_category": 1,
        "duplicate_annotation": 1,
    }
    assert {i.kind for i in report.errors} == {"duplicate_image_id", "unknown_category"}
    assert not report.ok
    assert report.class_histogram == {"a": 1, "b": 1}
    assert report.num_images == 2 and report.num_negative_images == 1  # ok.jpg and neg.jpg are usable
    text = report.format()
    assert "ERROR unknown_category: 1" in text and "warning missing_file: 1" in text
    assert "gone.jpg: file not found" in text and "class histogram" in text


def test_header_check_misses_truncation_but_is_cheaper(make_coco):
    folder, ann_file = _planted(make_coco)
    report = scan_coco(json.loads(ann_file.read_text()), folder, source="x", image_check="header").report
    assert "truncated_image" not in report.by_kind()
    report = scan_coco(json.loads(ann_file.read_text()), folder, source="x", image_check="none").report
    assert set(report.by_kind()) >= {"missing_file"} and "unreadable_image" not in report.by_kind()


def test_a_clean_dataset_reports_no_problem(make_coco):
    folder, ann_file = make_coco([(1, "a.jpg", 32, 32)], [ann(1, 1, 1, [1, 1, 9, 9])], cats((1, "a")))
    report = scan_coco(json.loads(ann_file.read_text()), folder, source="x", image_check="decode").report
    assert report.ok and not report.issues and "no problems found" in report.format()

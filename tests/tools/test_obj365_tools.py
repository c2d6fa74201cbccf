"""tools/remap_obj365.py and tools/resize_obj365.py on a small tree shaped like the README's Objects365."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
from PIL import Image

from dfine.data.objects365 import objects365_dataset, remap_objects365, split_val_ids

TOOLS = Path(__file__).resolve().parents[2] / "tools"
CATEGORIES = [{"id": 1, "name": "Person"}, {"id": 2, "name": "Sneakers"}]


def _image(path: Path, size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 80, 40)).save(path, quality=90)


def _split(base: Path, split: str, entries: list[tuple[int, str, tuple[int, int]]], ann_start: int) -> None:
    images, anns = [], []
    for k, (image_id, name, size) in enumerate(entries):
        _image(base / split / name, size)
        images.append({"id": image_id, "file_name": name, "width": size[0], "height": size[1]})
        anns.append(
            {
                "id": ann_start + k,
                "image_id": image_id,
                "category_id": 1 + k % 2,
                "bbox": [10.0, 20.0, 100.0, 50.0],
                "area": 5000.0,
                "iscrowd": 0,
            }
        )
    json_name = f"zhiyuan_objv2_{split}.json"
    (base / split / json_name).write_text(json.dumps({"images": images, "annotations": anns, "categories": CATEGORIES}))


@pytest.fixture
def obj365(tmp_path: Path) -> Path:
    """BASE/train/images/v1/patch0, BASE/val/images/v1|v2/patchN with the README's json names."""
    _split(
        tmp_path,
        "train",
        [(1, "images/v1/patch0/000000000.jpg", (800, 400)), (2, "images/v1/patch0/000000001.jpg", (320, 240))],
        ann_start=1,
    )
    val = [(10 + k, f"images/v{1 + k % 2}/patch{k}/00000000{k}.jpg", (300, 1000 if k == 3 else 200)) for k in range(5)]
    _split(tmp_path, "val", val, ann_start=100)
    return tmp_path


def _run_tool(name: str, *args: str) -> None:
    argv = sys.argv
    sys.argv = [name, *args]
    try:
        with pytest.raises(SystemExit) as done:
            runpy.run_path(str(TOOLS / name), run_name="__main__")
    finally:
        sys.argv = argv
    assert done.value.code == 0


def test_val_positions_5000_to_800000_move_to_train():
    kept, moved = split_val_ids(list(range(6000)))
    assert kept == list(range(5000)) and moved == list(range(5000, 6000))
    kept, moved = split_val_ids(list(range(10)), keep=2, move_end=8)
    assert kept == [0, 1] and moved == [2, 3, 4, 5, 6, 7]


def test_remap_then_resize_then_train_on_it(obj365, capsys):
    _run_tool("remap_obj365.py", "--base_dir", str(obj365), "--val_keep", "2", "--copy-images")
    train = json.loads((obj365 / "train" / "new_zhiyuan_objv2_train.json").read_text())
    val = json.loads((obj365 / "val" / "new_zhiyuan_objv2_val.json").read_text())
    assert [img["id"] for img in val["images"]] == [10, 11]
    moved = [img for img in train["images"] if img["file_name"].startswith("images_from_val/")]
    assert [img["file_name"] for img in moved] == [
        "images_from_val/v1/patch2/000000002.jpg",
        "images_from_val/v2/patch3/000000003.jpg",
        "images_from_val/v1/patch4/000000004.jpg",
    ]
    assert len(train["images"]) == 5 and len(train["annotations"]) == 5
    assert (obj365 / "train" / "images_from_val" / "v2" / "patch3" / "000000003.jpg").is_file()  # copied

    _run_tool("resize_obj365.py", "--base_dir", str(obj365), "--workers", "2")
    resized = json.loads((obj365 / "train" / "new_zhiyuan_objv2_train_resized.json").read_text())
    by_name = {img["file_name"]: img for img in resized["images"]}
    big = by_name["images/v1/patch0/000000000_resized.jpg"]  # 800x400 -> 640x320
    assert (big["width"], big["height"]) == (640, 320)
    with Image.open(obj365 / "train" / big["file_name"]) as image:
        assert image.size == (640, 320)
    tall = by_name["images_from_val/v2/patch3/000000003_resized.jpg"]  # 300x1000 -> 192x640
    assert (tall["width"], tall["height"]) == (192, 640)
    assert "images/v1/patch0/000000001.jpg" in by_name  # 320x240: unchanged
    boxes = {a["image_id"]: (a["bbox"], a["area"]) for a in resized["annotations"]}
    assert boxes[1][0] == pytest.approx([8.0, 16.0, 80.0, 40.0]) and boxes[1][1] == pytest.approx(3200.0)
    assert boxes[2][0] == [10.0, 20.0, 100.0, 50.0]
    assert (obj365 / "val" / "new_zhiyuan_objv2_val_resized.json").is_file()
    assert "images resized" in capsys.readouterr().out

    train_set = objects365_dataset(obj365, "train", image_check="decode")  # the README's config paths
    assert len(train_set) == 5 and train_set.class_names == ["Person", "Sneakers"]
    assert objects365_dataset(obj365, "val").num_classes == 2


def test_resize_is_resumable_and_drops_unreadable_images(obj365):
    remap_objects365(obj365, keep=2)
    (obj365 / "val" / "images" / "v2" / "patch1" / "000000001.jpg").write_text("broken")
    _run_tool("resize_obj365.py", "--base_dir", str(obj365), "--splits", "val")
    first = (obj365 / "val" / "new_zhiyuan_objv2_val_resized.json").read_text()
    assert [img["id"] for img in json.loads(first)["images"]] == [10]  # id 11 unreadable: left out
    _run_tool("resize_obj365.py", "--base_dir", str(obj365), "--splits", "val")  # re-run: same result
    assert (obj365 / "val" / "new_zhiyuan_objv2_val_resized.json").read_text() == first


def test_colliding_val_ids_are_renumbered(obj365):
    val_file = obj365 / "val" / "zhiyuan_objv2_val.json"
    data = json.loads(val_file.read_text())
    for img, a in zip(data["images"], data["annotations"]):
        img["id"] = a["image_id"] = img["id"] - 10  # 0..4: moved 2, 3, 4; train has 2
    val_file.write_text(json.dumps(data))
    result = remap_objects365(obj365, keep=2)
    train = json.loads(result.train_json.read_text())
    ids = [img["id"] for img in train["images"]]
    assert result.renumbered_ids and len(set(ids)) == len(ids)
    assert {a["image_id"] for a in train["annotations"]} == set(ids)
    assert len({a["id"] for a in train["annotations"]}) == len(train["annotations"])


def test_resize_before_remap_names_the_missing_step(obj365):
    from dfine.data.objects365 import resize_objects365

    with pytest.raises(FileNotFoundError, match="run tools/remap_obj365.py"):
        resize_objects365(obj365)

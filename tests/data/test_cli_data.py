"""``dfine data synth | check | convert`` through the argparse front end."""

from __future__ import annotations

import argparse
import json

import pytest

from dfine.cli.data import add_data_commands, main
from dfine.data.coco import CocoDetection

from .coco_helpers import ann, cats, write_image


def test_commands_register_on_any_subparsers_object():
    parser = argparse.ArgumentParser(prog="dfine")
    add_data_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", "check", "some/folder", "--no-decode"])
    assert args.command == "data" and args.data_command == "check" and args.no_decode and callable(args.run)
    with pytest.raises(SystemExit):
        parser.parse_args(["data", "explode"])


def test_synth_then_check_passes(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["synth", "--out", str(out), "--train", "6", "--val", "2", "--image-size", "96"]) == 0
    assert (out / "annotations" / "instances_train.json").is_file()
    assert len(list((out / "images" / "val").glob("*.jpg"))) == 2
    assert main(["check", str(out)]) == 0
    text = capsys.readouterr().out
    assert "[train]" in text and "[val]" in text and "class histogram" in text and "check passed" in text


def test_check_fails_on_errors_and_strict_warnings(make_coco, capsys):
    folder, ann_file = make_coco([(1, "a.jpg", 32, 32)], [ann(1, 1, 4, [1, 1, 5, 5])], cats((1, "a")))
    assert main(["check", str(ann_file), "--img-folder", str(folder)]) == 1
    assert "ERROR unknown_category" in capsys.readouterr().out
    folder, ann_file = make_coco(
        [(1, "a.jpg", 32, 32)], [ann(1, 1, 1, [20, 20, 30, 30])], cats((1, "a")), name="w.json"
    )
    assert main(["check", str(ann_file), "--img-folder", str(folder)]) == 0
    assert main(["check", str(ann_file), "--img-folder", str(folder), "--strict"]) == 1
    empty = folder.parent / "empty"
    empty.mkdir()
    assert main(["check", str(empty)]) == 2  # a clear error, not a traceback
    assert "no 'train' split found" in capsys.readouterr().err


def test_convert_yolo_and_voc_to_coco_json(tmp_path, capsys):
    yolo = tmp_path / "yolo"
    write_image(yolo / "images" / "train" / "a.jpg", (50, 40))
    (yolo / "labels" / "train").mkdir(parents=True)
    (yolo / "labels" / "train" / "a.txt").write_text("1 0.5 0.5 0.4 0.5\n")
    (yolo / "data.yaml").write_text("train: images/train\nval: images/train\nnames: [x, y]\n")
    assert main(["convert", str(yolo), "--out", str(tmp_path / "yolo_coco")]) == 0
    data = json.loads((tmp_path / "yolo_coco" / "instances_train.json").read_text())
    assert data["annotations"][0]["bbox"] == pytest.approx([15.0, 10.0, 20.0, 20.0])
    ds = CocoDetection(yolo, tmp_path / "yolo_coco" / "instances_train.json")  # img_folder: the YOLO root
    assert ds.class_names == ["x", "y"] and ds[0][1]["labels"].tolist() == [1]

    voc = tmp_path / "voc"
    write_image(voc / "JPEGImages" / "p.jpg", (50, 40))
    (voc / "Annotations").mkdir()
    (voc / "Annotations" / "p.xml").write_text(
        "<annotation><filename>p.jpg</filename><object><name>boat</name>"
        "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>10</xmax><ymax>20</ymax></bndbox></object></annotation>"
    )
    assert main(["convert", str(voc), "--out", str(tmp_path / "voc_coco"), "--classes", "car,boat"]) == 0
    data = json.loads((tmp_path / "voc_coco" / "instances_train.json").read_text())
    assert data["categories"] == [{"id": 1, "name": "car"}, {"id": 2, "name": "boat"}]
    assert data["images"][0]["width"] == 50  # no <size>: read from the image
    assert data["annotations"][0]["bbox"] == [0.0, 0.0, 10.0, 20.0]
    assert "img_folder:" in capsys.readouterr().out


def test_check_finds_every_split_of_a_roboflow_export(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["synth", "--out", str(out), "--train", "3", "--val", "2", "--image-size", "64"]) == 0
    export = tmp_path / "export"
    for split, source in (("train", "train"), ("valid", "val"), ("test", "val")):
        (export / split).mkdir(parents=True)
        for image in (out / "images" / source).iterdir():
            (export / split / image.name).write_bytes(image.read_bytes())
        data = (out / "annotations" / f"instances_{source}.json").read_text()
        (export / split / "_annotations.coco.json").write_text(data)
    capsys.readouterr()
    assert main(["check", str(export)]) == 0
    text = capsys.readouterr().out
    assert "[train]" in text and "[val, found as 'valid']" in text and "[test]" in text

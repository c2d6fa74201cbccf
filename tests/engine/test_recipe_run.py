"""``DFINE.train(data=...)`` / ``dfine train --data``: every dataset form trains 2 epochs and evaluates."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import warnings
from pathlib import Path

import pytest
import yaml

from dfine import DFINE
from dfine.cli.main import main
from dfine.data.synthetic import SynthConfig, generate_synthetic_dataset
from dfine.predictor import RandomWeightsWarning

SIDE = 64
CLASSES = ("circle", "square", "triangle")
QUICK = {"HGNetv2": {"pretrained": False}, "print_freq": 100}  # no ImageNet download in tests


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """An 8 + 3 image synthetic set of 3 classes (ids 1..3) in the README's COCO layout."""
    root = tmp_path_factory.mktemp("shapes")
    config = SynthConfig(num_train=8, num_val=3, image_size=SIDE, classes=CLASSES, min_object_size=8, seed=3)
    generate_synthetic_dataset(root, config)
    return root


def _coco(shapes: Path, split: str) -> dict:
    return json.loads((shapes / "annotations" / f"instances_{split}.json").read_text())


def coco_with_ids(shapes: Path, out: Path, ids: tuple[int, ...] = (3, 7, 42)) -> Path:
    """The README layout with category ids ``ids`` instead of 1..3."""
    shutil.copytree(shapes, out)
    for split in ("train", "val"):
        data = _coco(shapes, split)
        new = dict(zip((1, 2, 3), ids))
        for category in data["categories"]:
            category["id"] = new[category["id"]]
        for annotation in data["annotations"]:
            annotation["category_id"] = new[annotation["category_id"]]
        (out / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return out


def roboflow_export(shapes: Path, out: Path) -> Path:
    """A Roboflow COCO export: train/valid/test folders with _annotations.coco.json, a superclass with id 0 (that
    no annotation uses) and annotation ids from 0."""
    for split, source in (("train", "train"), ("valid", "val"), ("test", "val")):
        folder = out / split
        shutil.copytree(shapes / "images" / source, folder)
        data = _coco(shapes, source)
        for category in data["categories"]:
            category["supercategory"] = "shapes"
        data["categories"].insert(0, {"id": 0, "name": "shapes", "supercategory": "none"})
        for index, annotation in enumerate(data["annotations"]):
            annotation["id"] = index
        (folder / "_annotations.coco.json").write_text(json.dumps(data))
    return out


def _yolo_labels(shapes: Path, split: str, images: Path, labels: Path) -> None:
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    data = _coco(shapes, split)
    for image in data["images"]:
        shutil.copy(shapes / "images" / split / image["file_name"], images / image["file_name"])
        lines = []
        for a in (a for a in data["annotations"] if a["image_id"] == image["id"]):
            x, y, w, h = a["bbox"]
            cx, cy = (x + w / 2) / image["width"], (y + h / 2) / image["height"]
            lines.append(f"{a['category_id'] - 1} {cx:.6f} {cy:.6f} {w / image['width']:.6f} {h / image['height']:.6f}")
        (labels / f"{Path(image['file_name']).stem}.txt").write_text("\n".join(lines))


def yolo_dataset(shapes: Path, out: Path, form: str) -> Path:
    """A YOLO set in one of three usual ``data.yaml`` forms; returns what to pass as ``data``."""
    if form == "list_and_path":  # Ultralytics: path: root, names as a list, images/<split> + labels/<split>
        for split in ("train", "val"):
            _yolo_labels(shapes, split, out / "images" / split, out / "labels" / split)
        (out / "data.yaml").write_text(yaml.safe_dump(
            {"path": ".", "train": "images/train", "val": "images/val", "names": list(CLASSES)}))  # fmt: skip
        return out
    if form == "dict_and_absolute":  # names as {index: name}, absolute split folders, the yaml passed itself
        for split in ("train", "val"):
            _yolo_labels(shapes, split, out / "images" / split, out / "labels" / split)
        config = {"train": str(out / "images" / "train"), "val": str(out / "images" / "val"),
                  "names": dict(enumerate(CLASSES))}  # fmt: skip
        (out / "custom.yaml").write_text(yaml.safe_dump(config))
        return out / "custom.yaml"
    # Roboflow's YOLO export: <split>/images + <split>/labels, "valid", nc beside the names
    for split, source in (("train", "train"), ("valid", "val")):
        _yolo_labels(shapes, source, out / split / "images", out / split / "labels")
    (out / "data.yaml").write_text(yaml.safe_dump(
        {"train": "train/images", "val": "valid/images", "nc": 3, "names": list(CLASSES)}))  # fmt: skip
    return out


def _train(data: Path, out: Path, **extra):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        detector = DFINE("n")
    result = detector.train(data, epochs=2, image_size=SIDE, batch_size=4, output_dir=out, **QUICK, **extra)
    return detector, result


def _assert_trained(detector, result, names) -> None:
    assert result.epochs_run == 2 and result.best_ap >= 0  # every epoch evaluated: AP is defined
    assert result.best_checkpoint is not None and result.best_checkpoint.is_file()
    assert detector.class_names == list(names) and detector.input_size == SIDE
    config = yaml.safe_load(result.config_file.read_text())  # the run's config, repeatable with train.py -c
    assert config["epoches"] == 2 and config["num_classes"] == len(names)
    assert str(detector.info.source) == str(result.best_checkpoint)


@pytest.fixture(scope="module")
def coco_run(shapes, tmp_path_factory):
    """``DFINE("n").train`` on the README layout with category ids {3, 7, 42}: (detector, result, data, output)."""
    folder = tmp_path_factory.mktemp("coco_run")
    data = coco_with_ids(shapes, folder / "coco")
    said = io.StringIO()
    with contextlib.redirect_stdout(said):
        detector, result = _train(data, folder / "run")
    return detector, result, data, said.getvalue()


def test_coco_layout_with_sparse_category_ids(coco_run, tmp_path):
    detector, result, data, said = coco_run
    _assert_trained(detector, result, CLASSES)
    assert detector.info.category_ids == (3, 7, 42)
    (prediction,) = detector.predict(data / "images" / "val" / "000000.jpg", conf_threshold=0.0)
    assert {record["category_id"] for record in prediction.to_coco(0)} <= {3, 7, 42}
    assert "coco dataset" in said and "val (val)" in said and "D-FINE-N at 64 px: 2 epochs" in said
    metrics = detector.val()  # the data of the last train()
    assert set(metrics) >= {"AP", "AP50", "per_class_ap"} and set(metrics["per_class_ap"]) == set(CLASSES)
    detector.val(split="train", output_dir=tmp_path / "on_train")
    scored = json.loads((tmp_path / "on_train" / "eval" / "predictions.json").read_text())
    assert len({record["image_id"] for record in scored}) == 8  # the 8 training images, not the 3 val ones


def test_roboflow_export_from_trained_weights(shapes, coco_run, tmp_path, capsys):
    data = roboflow_export(shapes, tmp_path / "roboflow")
    detector = DFINE.from_pretrained(coco_run[1].best_checkpoint)
    result = detector.train(data, epochs=2, image_size=SIDE, batch_size=4, output_dir=tmp_path / "run", **QUICK)
    _assert_trained(detector, result, CLASSES)  # the superclass "shapes" is no class
    said = capsys.readouterr().out
    assert "roboflow dataset" in said and "val (valid)" in said
    assert "fine-tuning from" in said and "loaded" in said  # started from the first run's weights


@pytest.mark.parametrize(
    "form",
    [  # the default run trains on one form (the CLI test on another); tests/data/test_layout.py reads them all
        pytest.param("list_and_path", marks=pytest.mark.slow),
        pytest.param("dict_and_absolute", marks=pytest.mark.slow),
        "roboflow_layout",
    ],
)
def test_yolo_data_yaml_forms(shapes, tmp_path, capsys, form):
    data = yolo_dataset(shapes, tmp_path / "yolo", form)
    detector, result = _train(data, tmp_path / "run")
    _assert_trained(detector, result, CLASSES)
    assert "yolo dataset" in capsys.readouterr().out


def test_dfine_train_and_val_with_data(shapes, tmp_path, capsys):
    data = yolo_dataset(shapes, tmp_path / "yolo", "roboflow_layout")
    run = tmp_path / "run"
    argv = ["train", "--data", str(data), "--model", "n", "--epochs", "2", "--image-size", str(SIDE),
            "--batch-size", "4", "--output-dir", str(run), "-u", "HGNetv2.pretrained=False"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    said = capsys.readouterr().out
    assert "done: best AP" in said and (run / "best.pth").is_file()
    assert (
        main(["val", "--data", str(data), "--weights", str(run / "best.pth"), "--output-dir", str(tmp_path / "v")]) == 0
    )
    assert "AP " in capsys.readouterr().out and (tmp_path / "v" / "eval").is_dir()


def test_data_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nope"), "--model", "n"]) == 2
    assert "dataset not found" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("x")
    assert main(["train", "--data", str(tmp_path / "notes.txt"), "--model", "n"]) == 2
    assert "not a dataset" in capsys.readouterr().err
    assert main(["train"]) == 2
    assert "pass -c CONFIG" in capsys.readouterr().err


def test_the_trained_detector_exports_with_its_names_and_size(coco_run, tmp_path):
    from dfine.deploy.onnx import OnnxRuntimeBackend
    from dfine.deploy.runtime import BackendDetector

    detector, _, data, _ = coco_run
    image = data / "images" / "val" / "000000.jpg"
    (expected,) = detector.predict(image, conf_threshold=0.0)
    onnx_file = detector.export("onnx", tmp_path / "shapes")
    assert onnx_file == tmp_path / "shapes.onnx"
    exported = BackendDetector(OnnxRuntimeBackend(onnx_file))
    assert exported.class_names == list(CLASSES) and exported.image_size == SIDE and exported.category_ids == [3, 7, 42]
    (got,) = exported.predict(image, conf_threshold=0.0)
    assert got.labels.tolist()[:10] == expected.labels.tolist()[:10]
    assert (got.boxes[:10] - expected.boxes[:10]).abs().max() < 1e-2
    hf_folder = detector.export("hf", tmp_path / "shapes_hf")
    again = DFINE.from_pretrained(hf_folder)
    assert again.class_names == list(CLASSES) and again.input_size == SIDE
    with pytest.raises(ValueError, match="unknown export format 'tflite'"):
        detector.export("tflite")

"""Every entry point loads a dfine checkpoint through the one loading path and keeps what it knows.

The checkpoint is trained here (one short epoch) at 256 px on 3 named classes whose dataset
category ids are {3, 7, 42}: the size, names and ids must survive image and video prediction, ONNX
and OpenVINO export + inference, ``dfine visualize``, ``tools/inference/torch_inf.py`` and
``train.py --test-only``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import dfine
from dfine.cli.main import main as dfine_main
from dfine.data.synthetic import SynthConfig, generate_synthetic_dataset
from tests.engine.conftest import tiny_config
from tests.tools.test_deploy_tools import _tool

SIDE = 256
NAMES = ["apple", "bolt", "crane"]
IDS = [3, 7, 42]


def _renumber(ann_file: Path) -> None:
    """Give the synthetic set's categories 1..3 the names and ids of this test."""
    data = json.loads(ann_file.read_text())
    new_id = {cat["id"]: IDS[i] for i, cat in enumerate(sorted(data["categories"], key=lambda c: c["id"]))}
    data["categories"] = [{"id": i, "name": n, "supercategory": "thing"} for i, n in zip(IDS, NAMES)]
    for annotation in data["annotations"]:
        annotation["category_id"] = new_id[annotation["category_id"]]
    ann_file.write_text(json.dumps(data))


def _config(data: Path, run_dir: Path, side: int = SIDE) -> dict:
    config = tiny_config(data, run_dir, num_classes=3, eval_spatial_size=[side, side], epoches=1)
    for loader in ("train_dataloader", "val_dataloader"):
        for op in config[loader]["dataset"]["transforms"]["ops"]:
            if op["type"] == "Resize":
                op["size"] = [side, side]
    config["train_dataloader"]["collate_fn"]["base_size"] = side
    return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """``dfine train`` for one epoch; returns the data, config and ``last.pth`` paths."""
    root = tmp_path_factory.mktemp("entry_points")
    data = root / "data"
    generate_synthetic_dataset(
        data, SynthConfig(num_train=6, num_val=3, image_size=SIDE, classes=("circle", "square", "triangle"))
    )
    for split in ("train", "val"):
        _renumber(data / "annotations" / f"instances_{split}.json")
    config = root / "cfg.yml"
    config.write_text(yaml.safe_dump(_config(data, root / "run")))
    assert dfine_main(["train", "-c", str(config), "-d", "cpu", "--seed", "0"]) == 0
    return {"data": data, "config": config, "checkpoint": root / "run" / "last.pth", "root": root}


def _records(out_dir: Path) -> list[dict]:
    records = json.loads((out_dir / "predictions.json").read_text())
    assert records, "no detections written"
    return records


def _assert_names_and_ids(records: list[dict]) -> None:
    for record in records:
        assert record["category_id"] == IDS[record["label"]]
        assert record["category_name"] == NAMES[record["label"]]


def test_load_model_keeps_size_names_and_ids(trained):
    model, info = dfine.load_model(trained["checkpoint"])
    assert (info.image_size, info.class_names, info.category_ids) == (SIDE, tuple(NAMES), tuple(IDS))
    assert info.weights_format == "dfine" and info.size == "n" and model.num_classes == 3
    detector = dfine.DFINE.from_pretrained(trained["checkpoint"], device="cpu")
    assert detector.input_size == SIDE and detector.class_names == NAMES


def test_predict_images_with_category_ids_and_ann_file_image_ids(trained, tmp_path):
    images = trained["data"] / "images" / "val"
    out = tmp_path / "out"
    status = dfine_main(["predict", "--weights", str(trained["checkpoint"]), "--source", str(images),
                         "--out", str(out), "--conf", "0", "--device", "cpu"])  # fmt: skip
    assert status == 0
    _assert_names_and_ids(_records(out))
    numbering = json.loads((out / "image_ids.json").read_text())
    assert sorted(numbering.values()) == [0, 1, 2]
    ann_file = trained["data"] / "annotations" / "instances_val.json"
    coco_ids = {Path(i["file_name"]).name: i["id"] for i in json.loads(ann_file.read_text())["images"]}
    scored = tmp_path / "scored"
    status = dfine_main(["predict", "--weights", str(trained["checkpoint"]), "--source", str(images),
                         "--out", str(scored), "--conf", "0", "--ann-file", str(ann_file)])  # fmt: skip
    assert status == 0
    records = _records(scored)
    assert {r["image_id"] for r in records} == {coco_ids[Path(r["image_file"]).name] for r in records}
    assert not (scored / "image_ids.json").exists()


def test_predict_video_at_the_checkpoint_input_size(trained, tmp_path):
    pytest.importorskip("cv2")
    from dfine.data.images import load_image
    from dfine.deploy.video import VideoWriter

    frame = load_image(sorted((trained["data"] / "images" / "val").iterdir())[0])
    video = tmp_path / "clip.mp4"
    with VideoWriter(video, 5.0, frame.size) as writer:
        for _ in range(3):
            writer.write(frame)
    out = tmp_path / "out"
    status = dfine_main(["predict", "--weights", str(trained["checkpoint"]), "--source", str(video),
                         "--out", str(out), "--conf", "0"])  # fmt: skip
    assert status == 0 and (out / "clip.mp4").is_file()
    records = _records(out)
    assert {r["frame"] for r in records} == {0, 1, 2}
    _assert_names_and_ids(records)


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_exported_models_carry_names_ids_and_size(trained, tmp_path, backend):
    pytest.importorskip("onnxruntime")
    if backend == "openvino":
        pytest.importorskip("openvino")
    base = tmp_path / "model"
    formats = ["onnx"] if backend == "onnx" else ["onnx", "openvino"]
    assert dfine_main(["export", "-r", str(trained["checkpoint"]), "--format", *formats, "-o", str(base)]) == 0
    model_file = base.with_suffix(".onnx" if backend == "onnx" else ".xml")
    from dfine.deploy import open_backend

    metadata = open_backend(backend, model_file).metadata
    assert (metadata.class_names, metadata.category_ids, metadata.image_size) == (tuple(NAMES), tuple(IDS), SIDE)
    out = tmp_path / "out"
    images = trained["data"] / "images" / "val"
    status = dfine_main(["predict", "--backend", backend, "--weights", str(model_file),
                         "--source", str(images), "--out", str(out), "--conf", "0"])  # fmt: skip
    assert status == 0
    _assert_names_and_ids(_records(out))


def test_visualize(trained, tmp_path):
    out = tmp_path / "vis"
    status = dfine_main(["visualize", "--images", str(trained["data"] / "images" / "val"),
                         "--annotations", str(trained["data"] / "annotations" / "instances_val.json"),
                         "--weights", str(trained["checkpoint"]), "--out", str(out), "--conf", "0"])  # fmt: skip
    assert status == 0 and (out / "grid.jpg").is_file()
    assert (out / "index.html").read_text().count("40 predicted") == 3  # the checkpoint's K, at 256 px


def test_torch_inf_tool(trained, tmp_path):
    from tests.conftest import REPO_ROOT

    (tmp_path / "tools").symlink_to(REPO_ROOT / "tools")
    image = sorted((trained["data"] / "images" / "val").iterdir())[0]
    status, out, err = _tool(tmp_path, "tools/inference/torch_inf.py", "-r", str(trained["checkpoint"]),
                             "--im-file", str(image), "--conf", "0", "--device", "cpu")  # fmt: skip
    assert status == 0, err
    _assert_names_and_ids(_records(tmp_path / "torch_results"))


def test_test_only_and_a_disagreeing_config(trained, tmp_path, capsys):
    checkpoint, config = str(trained["checkpoint"]), str(trained["config"])
    assert dfine_main(["val", "-c", config, "-r", checkpoint, "-d", "cpu"]) == 0
    other = tmp_path / "other.yml"
    other.write_text(yaml.safe_dump(_config(trained["data"], tmp_path / "run", side=320)))
    capsys.readouterr()
    assert dfine_main(["val", "-c", str(other), "-r", checkpoint, "-d", "cpu"]) == 2
    error = capsys.readouterr().err
    assert "eval_spatial_size: [256, 256] vs [320, 320]" in error and "Traceback" not in error
    assert dfine_main(["export", "-c", str(other), "-r", checkpoint, "-o", str(tmp_path / "m")]) == 2
    assert "eval_spatial_size" in capsys.readouterr().err

"""INT8 export (NNCF post-training quantization of the OpenVINO IR) of a trained model: the AP check that keeps
it or refuses it, inference through the OpenVINO backend, and the one-line errors.

The model is the README quick start's D-FINE-N, trained on the generated shapes set (256 px; fixture weights in
fp16, ``tests/fixtures/README.md``). ``dfine data synth`` draws image ``i`` of a split from its own seed (which
images are empty depends on the split's size), so the 100 val images generated here are the quick start's, never
trained on.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys

import pytest
import torch
from PIL import Image
from torchvision.ops import box_iou

from dfine import DFINE
from dfine.cli.main import main
from dfine.data.synthetic import SynthConfig, generate_synthetic_dataset
from dfine.deploy import MissingDependencyError, OpenVINOBackend
from dfine.deploy.quantize import calibration_set, quantize_openvino
from dfine.deploy.runtime import preprocess
from tests.deploy.conftest import REPO_ROOT

ov = pytest.importorskip("openvino")
pytest.importorskip("nncf")
pytest.importorskip("onnx")

SHAPES_WEIGHTS = REPO_ROOT / "tests" / "fixtures" / "quickstart_n_shapes.pth"
SHAPES_CLASSES = ("circle", "square", "triangle", "star", "cross")
# The quick start's whole val set (100 images): on 24 images one box moves AP by ~1 point. Measured drops on it (MIXED):
# 8 calibration images 1.22, 16 0.46-0.72 (two subsets), 32 0.61, 64 0.34, 300 0.24 (the default; RESULTS.md).
CALIBRATION_IMAGES = 64
VAL_IMAGES = 100
MIN_FP32_AP = 50.0  # the quick start's model scores 67.5 on these images: a trained model, not noise


@pytest.fixture(scope="module")
def shapes_data(tmp_path_factory):
    """The first 64 training images and the 100 val images of the quick start's dataset."""
    root = tmp_path_factory.mktemp("shapes")
    generate_synthetic_dataset(root, SynthConfig(num_train=CALIBRATION_IMAGES, num_val=VAL_IMAGES))
    return root


@pytest.fixture(scope="module")
def shapes_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("int8") / "shapes_n.pth"
    path.symlink_to(SHAPES_WEIGHTS)
    return path


@pytest.fixture(scope="module")
def int8_export(shapes_checkpoint, shapes_data):
    """``dfine export --format openvino --int8 --calibration DATA --check``: (fp32 xml, int8 xml, its output)."""
    argv = ["export", "-r", shapes_checkpoint, "--format", "openvino", "--int8", "--check"]
    argv += ["--calibration", shapes_data, "--calibration-images", CALIBRATION_IMAGES]  # default --max-ap-drop 1
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main([str(a) for a in argv])
    assert status == 0, out.getvalue()
    return shapes_checkpoint.with_suffix(".xml"), shapes_checkpoint.with_name("shapes_n_int8.xml"), out.getvalue()


def test_int8_export_keeps_its_accuracy(int8_export):
    fp32_xml, int8_xml, out = int8_export
    assert int8_xml.is_file() and int8_xml.with_suffix(".bin").is_file()
    assert sorted(p.name for p in int8_xml.parent.glob("*int8*")) == ["shapes_n_int8.bin", "shapes_n_int8.xml"]
    model = ov.Core().read_model(str(int8_xml))
    assert any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())  # really quantized
    assert f"OpenVINO INT8: {int8_xml} " in out
    line = next(line for line in out.splitlines() if line.startswith("check: INT8 vs fp32"))  # the printed APs
    found = re.search(r"AP fp32 ([\d.]+), INT8 ([\d.]+) \(drop (-?[\d.]+) points, allowed 1\)", line)
    assert found and f"; {VAL_IMAGES} images" in line, line
    fp32_ap, int8_ap, drop = (float(v) for v in found.groups())
    assert fp32_ap >= MIN_FP32_AP and drop <= 1.0 and abs(fp32_ap - int8_ap - drop) < 0.1, line


def test_int8_runs_through_the_openvino_backend(int8_export, shapes_data, run_cli, tmp_path):
    fp32_xml, int8_xml, _ = int8_export
    fp32, int8 = OpenVINOBackend(fp32_xml, threads=2), OpenVINOBackend(int8_xml, threads=2)
    assert int8.metadata == fp32.metadata and int8.metadata.class_names == SHAPES_CLASSES
    assert int8.image_size == 256
    images = [Image.open(shapes_data / "images" / "val" / f"{i:06d}.jpg") for i in range(6)]
    inputs = preprocess(images, int8.image_size)
    labels, boxes, scores = int8(*inputs)
    assert [t.dtype for t in (labels, boxes, scores)] == [torch.int64, torch.float32, torch.float32]
    # every confident fp32 detection is found by INT8: same label, nearly the same box
    fp32_labels, fp32_boxes, fp32_scores = fp32(*inputs)
    assert sum(bool((fp32_scores[i] > 0.5).any()) for i in range(len(images))) >= 3  # (some images are empty)
    for i in range(len(images)):
        confident = fp32_scores[i] > 0.5
        iou = box_iou(fp32_boxes[i][confident], boxes[i][scores[i] > 0.3])
        same_label = fp32_labels[i][confident, None] == labels[i][scores[i] > 0.3][None]
        assert ((iou > 0.85) & same_label).any(dim=1).all(), (iou, same_label)
    status, out, _ = run_cli(
        "predict", "--backend", "openvino", "--weights", int8_xml,
        "--source", *[shapes_data / "images" / "val" / f"{i:06d}.jpg" for i in range(3)], "--out", tmp_path / "pred",
    )  # fmt: skip
    assert status == 0 and "openvino: 3 image(s)" in out
    assert (tmp_path / "pred" / "predictions.json").is_file()


def test_check_refuses_a_model_that_loses_accuracy(shapes_checkpoint, tmp_path, run_cli):
    """Black calibration images leave every quantizer range at ~0: the INT8 model finds nothing (12 val images
    are plenty to see a drop of ~70 points)."""
    small = tmp_path / "small"
    generate_synthetic_dataset(small, SynthConfig(num_train=1, num_val=12))
    black = tmp_path / "black"
    black.mkdir()
    for index in range(4):
        Image.new("RGB", (320, 320)).save(black / f"{index}.jpg")
    out = tmp_path / "bad"
    status, _, err = run_cli(
        "export", "-r", shapes_checkpoint, "--format", "openvino", "--int8", "--check", "--calibration", black,
        "--data", small, "-o", out,
    )  # fmt: skip
    assert status == 2 and err.count("\n") == 1, err
    assert err.startswith("dfine: error: the INT8 model loses too much accuracy") and "AP fp32 " in err
    assert not (tmp_path / "bad_int8.xml").exists()  # never left where a good model would be
    assert (tmp_path / "bad_int8.rejected.xml").is_file()
    assert (tmp_path / "bad.xml").is_file()  # the fp32 IR is fine and stays


def test_python_api_export_int8(shapes_checkpoint, shapes_data, tmp_path):
    """``DFINE.export("openvino", int8=True, calibration=...)``; its bad inputs fail before anything is written."""
    detector = DFINE.from_pretrained(shapes_checkpoint, device="cpu")
    with pytest.raises(ValueError, match="int8=True quantizes the OpenVINO model"):
        detector.export("onnx", tmp_path / "api", int8=True)
    with pytest.raises(FileNotFoundError, match="calibration data not found"):
        detector.export("openvino", tmp_path / "api", int8=True, calibration=tmp_path / "missing")
    assert not list(tmp_path.iterdir())
    one_image = [shapes_data / "images" / "train" / "000000.jpg"]
    path = detector.export("openvino", tmp_path / "api", int8=True, calibration=one_image)
    assert path == tmp_path / "api_int8.xml" and OpenVINOBackend(path).metadata.class_names == SHAPES_CLASSES


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--calibration", "{tmp}/missing"], "calibration data not found: {tmp}/missing"),
        (["--format", "onnx"], "--int8 quantizes the OpenVINO model: add openvino to --format"),
        (["--calibration", "{tmp}/images", "--check"], "--int8 --check scores fp32 and INT8 on a validation set"),
        (["--max-ap-drop", "-1"], "must be between 0 and 100 AP points, got -1"),
    ],
    ids=["missing-calibration", "not-openvino", "check-without-data", "negative-drop"],
)
def test_bad_int8_input_is_one_line(shapes_checkpoint, tmp_path, run_cli, extra, message):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "images" / "a.jpg")
    argv = ["export", "-r", shapes_checkpoint, "--int8", "-o", tmp_path / "m"]
    argv += [a.format(tmp=tmp_path) for a in extra] + ([] if "--format" in extra else ["--format", "openvino"])
    status, _, err = run_cli(*argv)
    assert status == 2 and err.count("\n") == 1 and message.format(tmp=tmp_path) in err, err
    assert not list(tmp_path.glob("m*"))  # failed before the export


def test_missing_nncf_names_the_extra(monkeypatch, shapes_checkpoint, tmp_path, run_cli):
    monkeypatch.setitem(sys.modules, "nncf", None)
    with pytest.raises(MissingDependencyError, match=r"pip install dfine\[int8\]"):
        quantize_openvino(tmp_path / "m.xml", tmp_path / "m_int8.xml", None, calibration_set(None, 1))
    status, _, err = run_cli("export", "-r", shapes_checkpoint, "--format", "openvino", "--int8", "-o", tmp_path / "m")
    assert status == 2 and err.count("\n") == 1 and "pip install dfine[int8]" in err, err
    assert not list(tmp_path.glob("m*"))  # before the export


def test_calibration_subset_and_image_list(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(5):
        Image.new("RGB", (16, 16), (index, 0, 0)).save(folder / f"{index}.png")
    subset = calibration_set(folder, count=3)
    assert len(subset) == 3 and subset.files == calibration_set(folder, count=3).files  # a fixed choice
    listing = tmp_path / "list.txt"
    listing.write_text("images/0.png\n# a comment\nimages/4.png  # trailing comment\n")
    listed = calibration_set(listing)
    assert listed.files == (folder / "0.png", folder / "4.png") and listed[1].getpixel((0, 0)) == (4, 0, 0)
    listing.write_text("images/9.png\n")
    with pytest.raises(FileNotFoundError, match="listed calibration image not found"):
        calibration_set(listing)
    assert calibration_set(None, count=2)[1].size == (640, 640)  # generated scenes

"""``dfine export``, ``dfine predict --backend`` and ``dfine visualize``: outputs and one-line errors."""

from __future__ import annotations

import json

import pytest

from dfine.data.synthetic import SynthConfig, generate_synthetic_dataset
from dfine.deploy.verify import check_images
from tests.deploy.conftest import N_CONFIG, REPO_ROOT

LOW_CONF = "0.02"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Four generated val images with COCO annotations."""
    root = tmp_path_factory.mktemp("synth")
    generate_synthetic_dataset(root, SynthConfig(num_train=1, num_val=4, image_size=320))
    return root / "images" / "val", root / "annotations" / "instances_val.json"


def test_export_wrote_beside_the_checkpoint(n_checkpoint, n_exports):
    assert n_exports["onnx"] == n_checkpoint.parent / "dfine_n.onnx" and n_exports["onnx"].is_file()
    assert not list(n_checkpoint.parent.glob("*.data"))  # self-contained: no external-data file left


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--opset", "16"], "opset 16 is not supported: below 17"),
        (["--opset", "40"], "opset 40 is newer than"),
        (["-c", REPO_ROOT / "configs/dfine/custom/dfine_hgnetv2_n_custom.yml"], "does not fit the model of config"),
    ],
    ids=["old-opset", "new-opset", "checkpoint-vs-config"],
)
def test_export_errors_are_one_line(run_cli, tmp_path, n_checkpoint, argv, message):
    pytest.importorskip("onnx")
    argv = ["-c", N_CONFIG, *argv] if "-c" not in argv else argv
    status, _, err = run_cli("export", *argv, "-r", n_checkpoint, "--output", tmp_path / "x.onnx")
    assert status == 2
    assert err.startswith("dfine: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "x.onnx").exists()


def test_predict_with_onnx_backend_and_video_with_torch(run_cli, tmp_path, n_exports, n_checkpoint):
    pytest.importorskip("onnxruntime")
    images = tmp_path / "images"
    images.mkdir()
    for index, scene in enumerate(check_images()):
        scene.save(images / f"scene{index}.jpg")
    status, out, _ = run_cli(
        "predict", "--backend", "onnx", "--weights", n_exports["onnx"], "--source", images,
        "--out", tmp_path / "onnx", "--conf", LOW_CONF, "--threads", "2",
    )  # fmt: skip
    assert status == 0 and "onnx: 2 image(s)" in out
    records = json.loads((tmp_path / "onnx" / "predictions.json").read_text())
    assert {r["image_file"] for r in records} == {str(images / "scene0.jpg"), str(images / "scene1.jpg")}
    pytest.importorskip("cv2")
    from dfine.deploy.video import VideoWriter

    with VideoWriter(tmp_path / "clip.avi", 5.0, (640, 480)) as writer:
        writer.write(check_images()[0])
    status, out, err = run_cli(
        "predict", "--weights", n_checkpoint, "--source", tmp_path / "clip.avi", "--out", tmp_path / "torch",
        "--conf", LOW_CONF, "--device", "cpu",
    )  # fmt: skip
    assert status == 0 and "torch: 0 image(s) and 1 video frame(s)" in out
    assert "memory allocator: unchanged (DFINE_KEEP_FREED_MEMORY=0)" in err  # a CPU run says its allocator setting
    assert (tmp_path / "torch" / "clip.mp4").is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--backend", "onnx", "--source", "x.jpg"], "--backend onnx needs the exported model file"),
        (["--backend", "openvino", "--weights", "m.xml", "--demo"], "--demo runs with --backend torch"),
        (["--backend", "onnx", "--weights", "missing.onnx", "--source", "."], "ONNX file not found"),
    ],
)
def test_predict_backend_errors_are_one_line(run_cli, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.jpg").write_bytes(b"")
    status, _, err = run_cli("predict", *argv, "--out", tmp_path / "out")
    assert status == 2 and err.startswith("dfine: error: ") and message in err


def test_visualize_from_a_model_and_from_predictions(run_cli, tmp_path, synthetic, n_exports):
    pytest.importorskip("onnxruntime")
    images, annotations = synthetic
    status, out, _ = run_cli(
        "visualize", "--images", images, "--annotations", annotations, "--weights", n_exports["onnx"],
        "--backend", "onnx", "--out", tmp_path / "vis", "--conf", LOW_CONF, "--max-images", "3",
    )  # fmt: skip
    assert status == 0 and "wrote 3 panels" in out
    assert sorted(p.name for p in (tmp_path / "vis").iterdir()) == ["grid.jpg", "index.html", "panels"]
    page = (tmp_path / "vis" / "index.html").read_text()
    assert page.count("<figure>") == 3 and "panels/000000.jpg" in page
    # predictions.json of `dfine predict`, matched to the dataset by file name
    run_cli("predict", "--backend", "onnx", "--weights", n_exports["onnx"], "--source", images,
         "--out", tmp_path / "pred", "--conf", LOW_CONF)  # fmt: skip
    status, out, _ = run_cli(
        "visualize", "--images", images, "--annotations", annotations,
        "--predictions", tmp_path / "pred" / "predictions.json", "--out", tmp_path / "vis2", "--conf", "0.0",
    )  # fmt: skip
    assert status == 0 and "wrote 4 panels" in out
    assert "ground-truth, 0 predicted" not in (tmp_path / "vis2" / "index.html").read_text()


def test_visualize_bad_annotations(run_cli, tmp_path, synthetic):
    images, _ = synthetic
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": []}))
    status, _, err = run_cli(
        "visualize", "--images", images, "--annotations", bad, "--predictions", bad, "--out", tmp_path / "v"
    )
    assert status == 2 and "not a COCO annotation file" in err

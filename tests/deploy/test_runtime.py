"""One pipeline for every backend: detector, tie-aware comparison, folder/video runs, bad input."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import dfine
from dfine.deploy import (
    Backend,
    BackendDetector,
    DeployModel,
    MissingDependencyError,
    ModelMetadata,
    compare_detections,
    load_deploy_model,
    open_backend,
    run_inference,
)
from dfine.deploy.verify import check_images
from dfine.engine.checkpoint import CheckpointError
from tests.deploy.conftest import N_CONFIG, REPO_ROOT

LOW_CONF = 0.02  # the fixture-conditioned N weights score ~0.03-0.07 on these scenes


class _Recording(Backend):
    """A fake static-batch backend: returns each image's width as its score, and records batch sizes."""

    name = "fake"

    def __init__(self, fixed_batch: int | None) -> None:
        super().__init__(ModelMetadata(("a", "b"), image_size=64, num_top_queries=1), fixed_batch)
        self.calls: list[int] = []

    def _run(self, images, orig_target_sizes):
        self.calls.append(len(images))
        batch = len(images)
        boxes = torch.tensor([[1.0, 2.0, 30.0, 40.0]]).expand(batch, 1, 4)
        return torch.ones(batch, 1, dtype=torch.int64), boxes, orig_target_sizes[:, :1].float() / 1000


def test_static_batch_models_get_padded_batches():
    backend = _Recording(fixed_batch=2)
    detector = BackendDetector(backend)
    images = [Image.new("RGB", (100 + i, 50)) for i in range(3)]
    predictions = detector.detect(images, [None] * 3, conf_threshold=0.0)
    assert backend.calls == [2, 2]  # 3 images: a full batch, then one padded with a copy of the last
    assert [round(p.scores.item() * 1000) for p in predictions] == [100, 101, 102]
    assert predictions[0].names == ["b"] and predictions[0].image_size == (100, 50)
    assert predictions[0].boxes.tolist() == [[1.0, 2.0, 30.0, 40.0]]
    with pytest.raises(ValueError, match="static batch of 2"):
        backend(torch.zeros(3, 3, 64, 64), torch.ones(3, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"images must be \[N, 3, 64, 64\]"):
        backend(torch.zeros(2, 3, 32, 32), torch.ones(2, 2, dtype=torch.int64))


def _detections(labels, scores, boxes):
    return torch.tensor([labels]), torch.tensor([boxes], dtype=torch.float32), torch.tensor([scores])


def test_compare_detections_allows_for_ties_and_the_kth_place():
    boxes = [[0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 2, 2]]
    reference = _detections([1, 2, 3], [0.9, 0.50001, 0.1], boxes)
    same = compare_detections(reference, reference)
    assert (same.max_score_diff, same.max_box_diff, same.paired, same.unpaired) == (0.0, 0.0, 3, 0)
    # near-tie swapped in order, and the last place taken by another detection scoring the same
    swapped = _detections([2, 1, 7], [0.50002, 0.9, 0.1], [boxes[1], boxes[0], [3, 3, 4, 4]])
    diff = compare_detections(reference, swapped, score_tol=1e-4)
    assert diff.unpaired == 0 and diff.paired == 2 and diff.max_box_diff == 0.0
    # a different class well above the K-th score is a real disagreement
    wrong = _detections([1, 5, 3], [0.9, 0.50001, 0.1], boxes)
    assert compare_detections(reference, wrong).unpaired == 1
    moved = _detections([1, 2, 3], [0.9, 0.50001, 0.1], [[0, 0, 10, 12], boxes[1], boxes[2]])
    assert compare_detections(reference, moved).max_box_diff == pytest.approx(2.0)


def test_every_backend_gives_the_predictions_of_dfine_predict(n_exports, official_n_weights):
    pytest.importorskip("onnxruntime")
    images = check_images()
    expected = dfine.DFINE.from_checkpoint(official_n_weights, device="cpu").predict(images, conf_threshold=LOW_CONF)
    kinds = {"torch": official_n_weights, "onnx": n_exports["onnx"]}
    if n_exports["openvino"].is_file():
        kinds["openvino"] = n_exports["openvino"]
    for kind, path in kinds.items():
        detector = BackendDetector(open_backend(kind, path, device="cpu" if kind != "openvino" else None))
        found = detector.predict(images, conf_threshold=LOW_CONF)
        for want, got in zip(expected, found):
            assert len(got) > 0 and got.image_size == want.image_size and got.image is not None
            diff = compare_detections(
                [t[None] for t in (want.labels, want.boxes, want.scores)],
                [t[None] for t in (got.labels, got.boxes, got.scores)],
                score_tol=1e-4,
            )
            assert diff.unpaired == 0 and diff.max_box_diff < 1e-2, f"{kind}: {diff.describe()}"


def _write_video(path, frames):
    from dfine.deploy.video import VideoWriter

    with VideoWriter(path, 5.0, frames[0].size) as writer:
        for frame in frames:
            writer.write(frame)


def test_run_inference_on_images_and_a_video(n_exports, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("cv2")
    scenes = check_images()
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    scenes[0].save(inputs / "a.jpg")
    scenes[1].save(inputs / "b.png")
    _write_video(inputs / "clip.mp4", [scenes[0]] * 3)
    detector = BackendDetector(open_backend("onnx", n_exports["onnx"], threads=2))
    run = run_inference(detector, [inputs], tmp_path / "out", conf_threshold=LOW_CONF, batch_size=2, progress=False)
    assert (run.images, run.frames) == (2, 3)
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["a.jpg", "b.png", "clip.mp4", "image_ids.json", "predictions.json"]
    numbering = json.loads((tmp_path / "out" / "image_ids.json").read_text())
    frames = {f"{inputs / 'clip.mp4'}#{i}": 2 + i for i in range(3)}
    assert numbering == {str(inputs / "a.jpg"): 0, str(inputs / "b.png"): 1, **frames}
    records = json.loads(run.results_file.read_text())
    assert len(records) == run.detections > 0
    first = records[0]
    assert set(first) == {"image_id", "image_file", "category_id", "category_name", "label", "bbox", "score"}
    assert first["category_id"] == dfine.categories.COCO_CATEGORY_IDS[first["label"]]
    frames = [r for r in records if "frame" in r]
    assert {r["frame"] for r in frames} <= {0, 1, 2} and {r["image_id"] for r in frames} <= {2, 3, 4}
    from dfine.deploy.video import VideoReader

    with VideoReader(tmp_path / "out" / "clip.mp4") as reader:
        assert reader.size == scenes[0].size and len(list(reader)) == 3


def test_bad_inputs_fail_with_one_clear_error(n_exports, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    detector = BackendDetector(open_backend("onnx", n_exports["onnx"]))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ValueError, match="broken.jpg: cannot be decoded as an image"):
        run_inference(detector, [broken], tmp_path / "out1", progress=False)
    with pytest.raises(FileNotFoundError, match="input not found"):
        run_inference(detector, [tmp_path / "missing.jpg"], tmp_path / "out2", progress=False)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "readme.txt").write_text("hello")
    with pytest.raises(ValueError, match="no images or videos found"):
        run_inference(detector, [notes], tmp_path / "out3", progress=False)
    video = tmp_path / "videos" / "damaged.mp4"
    video.parent.mkdir()
    video.write_bytes(b"\0" * 64)
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "cv2", None)
        with pytest.raises(MissingDependencyError, match=r"opencv-python-headless.*pip install dfine\[video\]"):
            run_inference(detector, [video], tmp_path / "out4", progress=False)
    pytest.importorskip("cv2")
    with pytest.raises(ValueError, match="damaged.mp4: cannot be opened as a video"):
        run_inference(detector, [video], tmp_path / "out5", progress=False)


def test_open_backend_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown backend 'tflite'"):
        open_backend("tflite", tmp_path / "m")
    with pytest.raises(ValueError, match="the onnx backend needs the exported model file"):
        open_backend("onnx")
    with pytest.raises(ValueError, match="-c/--config applies to the torch backend"):
        open_backend("openvino", tmp_path / "m.xml", config=N_CONFIG)


def test_checkpoint_that_does_not_fit_the_config(official_n_weights):
    with pytest.raises(CheckpointError, match=r"does not fit the model of config .*s_coco.yml.*looks like D-FINE-N"):
        load_deploy_model(REPO_ROOT / "configs" / "dfine" / "dfine_hgnetv2_s_coco.yml", official_n_weights)


def test_deploy_model_needs_inference_form():
    model = dfine.build_model("n", num_classes=3)
    with pytest.raises(ValueError, match=r"call model.deploy\(\) first"):
        DeployModel(model, dfine.PostProcessor(num_classes=3))
    with pytest.raises(ValueError, match="decodes 80 classes but the model has 3"):
        DeployModel(model.deploy(), dfine.PostProcessor(num_classes=80))


def test_metadata_round_trip():
    meta = ModelMetadata(("cat", 'say "hi"'), image_size=512, num_top_queries=100)
    assert ModelMetadata.from_strings(meta.to_strings()) == meta
    assert ModelMetadata.from_strings({}) is None
    assert ModelMetadata.for_classes(3).class_names == ("class_0", "class_1", "class_2")
    assert np.isclose(meta.image_size, 512)


class _Shifted(_Recording):
    """The fake backend with every box moved by ``shift`` pixels."""

    def __init__(self, shift: float) -> None:
        super().__init__(fixed_batch=None)
        self.shift = shift

    def _run(self, images, orig_target_sizes):
        labels, boxes, scores = super()._run(images, orig_target_sizes)
        return labels, boxes + self.shift, scores


def test_check_fails_above_tolerance():
    from dfine.deploy.verify import ExportCheckError, verify_backend

    images = [Image.new("RGB", (640, 480)), Image.new("RGB", (320, 200))]
    close = verify_backend(_Shifted(0.01), _Recording(None), images)  # 0.01 px < 1e-4 * 640
    assert close.max_box_diff == pytest.approx(0.01, abs=1e-5) and close.unpaired == 0
    with pytest.raises(ExportCheckError, match=r"fake disagrees with PyTorch: .*max \|box\| diff 0.5 px"):
        verify_backend(_Shifted(0.5), _Recording(None), images)

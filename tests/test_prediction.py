"""The shared :class:`dfine.Prediction` type: drawing, indexing, JSON / COCO / supervision conversion."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from dfine.drawing import PALETTE
from dfine.prediction import Detection, Prediction


@pytest.mark.parametrize("style", ["dfine", "supervision"])
def test_the_most_confident_box_is_drawn_on_top(style):
    if style == "supervision":
        pytest.importorskip("supervision")  # in the dev extra; CI installs it
    image = Image.new("RGB", (200, 200), (255, 255, 255))
    box = [40.0, 60.0, 160.0, 180.0]
    for scores in ([0.9, 0.1], [0.1, 0.9]):  # input order must not matter
        prediction = Prediction(
            boxes=torch.tensor([box, box]),
            scores=torch.tensor(scores),
            labels=torch.tensor([0, 1]),
            names=["a", "b"],
            image_size=image.size,
            image=image,
        )
        drawn = prediction.draw(style=style)
        best = int(torch.tensor(scores).argmax())
        assert drawn.getpixel((40, 120)) == PALETTE[best]  # the left edge of the shared box
        if style == "dfine":
            assert drawn.getpixel((41, 58)) == PALETTE[best]  # inside the label box above the shared box


def _three(**extra) -> Prediction:
    """Three detections of two classes, best first (as a detector returns them)."""
    return Prediction(
        boxes=torch.tensor([[10.0, 20.0, 50.0, 80.0], [5.5, 6.25, 30.0, 40.0], [0.0, 0.0, 100.0, 90.0]]),
        scores=torch.tensor([0.9, 0.6, 0.3]),
        labels=torch.tensor([1, 0, 1]),
        names=["dog", "cat", "dog"],
        image_size=(120, 100),
        **extra,
    )


def test_indexing_slicing_masks_and_class_names():
    p = _three()
    assert len(p[0]) == 1 and p[0].names == ["dog"] and p[-1].names == ["dog"] and p[-1].labels.tolist() == [1]
    assert p[1:].names == ["cat", "dog"] and p[::2].labels.tolist() == [1, 1]
    confident = p[p.scores > 0.5]
    assert isinstance(confident, Prediction) and confident.names == ["dog", "cat"]
    assert torch.equal(p["dog"].scores, p.scores[[0, 2]]) and len(p["bird"]) == 0
    assert p[["cat", "bird"]].names == ["cat"]
    assert p[[2, 0]].boxes[:, 2].tolist() == [100.0, 50.0] and p[np.array([True, False, True])].names == ["dog", "dog"]
    assert p[p.labels == 1].image_size == (120, 100)
    with pytest.raises(IndexError, match="out of range for 3"):
        p[3]
    with pytest.raises(IndexError, match="one entry per detection"):
        p[torch.tensor([True, False])]
    with pytest.raises(TypeError, match="positions, masks or class names"):
        p[torch.tensor([0.5])]


def test_iteration_gives_plain_python_detections():
    detections = list(_three())
    assert detections[1] == Detection(box=(5.5, 6.25, 30.0, 40.0), score=pytest.approx(0.6), label=0, name="cat")
    assert all(type(d.score) is float and type(d.label) is int and type(d.box[0]) is float for d in detections)


def test_json_round_trip_is_exact(tmp_path):
    p = _three(source=tmp_path / "a.jpg", category_ids=[3, 7])
    text = p.to_json()
    data = json.loads(text)  # plain numbers and strings only
    assert data["detections"][0] == {"box": [10.0, 20.0, 50.0, 80.0], "score": pytest.approx(0.9), "label": 1,
                                      "name": "dog", "category_id": 7}  # fmt: skip
    back = Prediction.from_json(text)
    for name in ("boxes", "scores", "labels"):
        assert torch.equal(getattr(back, name), getattr(p, name)), name
    assert (back.names, back.image_size, back.source, back.category_ids) == (p.names, p.image_size, p.source, [3, 7])
    empty = Prediction.from_json(p[p.scores > 1].to_json())
    assert len(empty) == 0 and empty.boxes.shape == (0, 4)


def test_coco_records_use_the_dataset_category_ids():
    records = _three(category_ids=[3, 7]).to_coco(image_id=42, image_file="a.jpg")
    assert [r["category_id"] for r in records] == [7, 3, 7]
    assert records[1]["bbox"] == [5.5, 6.25, 24.5, 33.75] and records[0]["image_file"] == "a.jpg"
    assert [r["category_id"] for r in _three().to_coco(0)] == [1, 0, 1]  # no id map: the label


def test_supervision_round_trip():
    sv = pytest.importorskip("supervision")  # in the dev extra; CI installs it
    p = _three()
    detections = p.to_supervision()
    assert isinstance(detections, sv.Detections) and len(detections) == 3
    assert detections.class_id.tolist() == [1, 0, 1] and list(detections.data["class_name"]) == p.names
    np.testing.assert_array_equal(detections.xyxy, p.boxes.numpy())
    back = Prediction.from_supervision(detections[detections.confidence > 0.5], image_size=p.image_size)
    assert back.names == ["dog", "cat"] and torch.equal(back.boxes, p.boxes[:2])
    bare = sv.Detections(xyxy=np.array([[1.0, 2.0, 3.0, 4.0]]), class_id=np.array([1]))
    named = Prediction.from_supervision(bare, (10, 10), class_names=["cat", "dog"])
    assert named.names == ["dog"] and named.scores.tolist() == [1.0]


def test_to_supervision_without_the_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "supervision", None)  # import supervision -> ImportError
    with pytest.raises(ImportError, match=r"pip install dfine\[supervision\]"):
        _three().to_supervision()

"""Tracking (:mod:`dfine.tracking`, ``dfine track``): persistent ids, MOT output, the command."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from dfine.cli.main import main
from dfine.prediction import Prediction
from dfine.tracking import Tracker, Trails, track, write_mot

pytest.importorskip("trackers")  # dfine[track]; in the dev extra


def _moving_shapes(frames: int = 60, seed: int = 0) -> tuple[list[Prediction], np.ndarray]:
    """Detections of 3 objects crossing a 640x360 frame (1-2 px jitter, one object missed for 2 frames).

    Returns the per-frame predictions and the true boxes ``[frames, 3, 4]``.
    """
    rng = np.random.default_rng(seed)
    starts = np.array([[20.0, 40.0], [600.0, 150.0], [300.0, 300.0]])
    velocity = np.array([[6.0, 1.0], [-5.0, 0.5], [2.0, -3.0]])
    size = np.array([[60.0, 50.0], [40.0, 80.0], [70.0, 40.0]])
    truth, predictions = [], []
    for t in range(frames):
        corner = starts + velocity * t
        boxes = np.concatenate([corner, corner + size], axis=1)
        truth.append(boxes)
        seen = [k for k in range(3) if not (k == 1 and t in (30, 31))]
        noisy = boxes[seen] + rng.uniform(-1.5, 1.5, (len(seen), 4))
        predictions.append(Prediction(
            boxes=torch.tensor(noisy, dtype=torch.float32), scores=torch.full((len(seen),), 0.9),
            labels=torch.tensor([k % 2 for k in seen]), names=["a" if k % 2 == 0 else "b" for k in seen],
            image_size=(640, 360), frame=t,
        ))  # fmt: skip
    return predictions, np.stack(truth)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_bytetrack_keeps_each_object_on_one_id():
    predictions, truth = _moving_shapes()
    ids_of = {k: [] for k in range(3)}  # the track id given to each true object, frame by frame
    for tracked in track(predictions, Tracker("bytetrack", frame_rate=25)):
        for box, track_id in zip(tracked.boxes.numpy(), tracked.track_ids.tolist()):
            k = max(range(3), key=lambda j: _iou(box, truth[tracked.frame, j]))
            ids_of[k].append(track_id)
    switches = sum(sum(a != b for a, b in zip(ids[:-1], ids[1:])) for ids in ids_of.values())
    assert all(len(ids) >= 50 for ids in ids_of.values()), {k: len(v) for k, v in ids_of.items()}
    assert switches == 0 and len({ids[0] for ids in ids_of.values()}) == 3  # through the 2-frame miss too


def test_mot_lines_parse_and_predictions_carry_track_ids():
    predictions, _ = _moving_shapes(frames=10)
    out = io.StringIO()
    tracked = list(track(predictions, Tracker("sort", frame_rate=25)))
    written = sum(write_mot(out, p) for p in tracked)
    rows = [line.split(",") for line in out.getvalue().splitlines()]
    assert written == len(rows) > 0 and all(len(row) == 8 for row in rows)
    frame, track_id, x, y, w, h, score, label = rows[-1]
    assert int(frame) == 10 and int(track_id) >= 0 and float(w) > 0 and 0 < float(score) <= 1 and int(label) in (0, 1)
    last = tracked[-1]
    assert Prediction.from_json(last.to_json()).track_ids.tolist() == last.track_ids.tolist()
    assert last.to_supervision().tracker_id.tolist() == last.track_ids.tolist()
    assert set(Trails(5).update(last)) == set(last.track_ids.tolist())
    with pytest.raises(ValueError, match="needs a tracked Prediction"):
        write_mot(out, predictions[0])


def test_unknown_tracker_and_option_are_named():
    with pytest.raises(ValueError, match="tracker 'deepsort' is not available; choose one of bytetrack"):
        Tracker("deepsort")
    with pytest.raises(ValueError, match="bytetrack has no option 'buffer'"):
        Tracker("bytetrack", buffer=3)


def test_dfine_track_writes_an_annotated_video_and_a_mot_file(tmp_path, capsys, monkeypatch):
    from dfine.deploy.video import VideoReader, VideoWriter

    clip = tmp_path / "clip.avi"
    with VideoWriter(clip, 10.0, (160, 96)) as writer:
        for t in range(12):
            frame = Image.new("RGB", (160, 96), (30, 30, 30))
            frame.paste((230, 200, 40), (10 + 5 * t, 20, 50 + 5 * t, 60))
            writer.write(frame)
    from dfine.deploy.runtime import BackendDetector

    def find_the_square(self, images, image_size, resize="squash"):  # stand-in model: the square, score 0.95
        boxes = []
        for image in images:
            pixels = np.asarray(image).astype(int)
            ys, xs = np.nonzero((pixels[:, :, 0] > 150) & (pixels[:, :, 2] < 100))  # yellow: red, little blue
            boxes.append([[float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]])
        return torch.zeros(len(images), 1, dtype=torch.int64), torch.tensor(boxes), torch.full((len(images), 1), 0.95)

    monkeypatch.setattr(BackendDetector, "_run", find_the_square)
    out = tmp_path / "out"
    argv = ["track", "--size", "n", "--source", str(clip), "--out", str(out), "--image-size", "256"]
    assert main(argv) == 0
    said = capsys.readouterr()
    assert "RANDOM weights" in said.err and "clip: 12 frames" in said.out
    assert "memory allocator: unchanged (DFINE_KEEP_FREED_MEMORY=0)" in said.err
    with VideoReader(out / "clip.mp4") as reader:
        assert sum(1 for _ in reader) == 12 and reader.size == (160, 96)
    rows = [line.split(",") for line in (out / "clip.txt").read_text().splitlines()]
    assert len(rows) >= 10 and all(len(row) == 8 and 1 <= int(row[0]) <= 12 for row in rows)
    assert len({row[1] for row in rows}) == 1 and "1 tracks" in said.out  # one square, one id
    first = next(row for row in rows if int(row[0]) == 5)  # the square is at x = 10 + 5 * 4 in frame 5
    assert abs(float(first[2]) - 30) <= 1 and abs(float(first[4]) - 40) <= 1


@pytest.mark.parametrize(
    ("source", "says"), [("nope.mp4", "does not exist"), ("notes.txt", "is not a video")]
)  # fmt: skip
def test_dfine_track_bad_sources(tmp_path, capsys, source, says):
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["track", "--size", "n", "--source", str(tmp_path / source), "--out", str(tmp_path / "o")]) == 2
    assert says in capsys.readouterr().err

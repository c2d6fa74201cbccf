"""Multi-object tracking over a stream of :class:`~dfine.prediction.Prediction` (video frames in order).

The association is Roboflow's ``trackers`` package (``pip install dfine[track]``): ByteTrack by default, SORT and
OC-SORT by name. It is maintained, works on ``supervision.Detections`` (our interchange type already) and keeps the
Kalman filter and the two-stage low/high-score matching out of this code base. Results are written as MOT text
(``frame,id,x,y,w,h,score,class``, frames from 1) and drawn with the track id and a trail of recent centres.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Iterable, Iterator
from typing import TextIO

import numpy as np
import torch

from .optional import import_optional
from .prediction import Prediction

__all__ = ["TRACKERS", "Tracker", "track", "write_mot"]

TRACKERS: dict[str, str] = {"bytetrack": "ByteTrackTracker", "sort": "SORTTracker", "ocsort": "OCSORTTracker"}


class Tracker:
    """One tracker instance (one video): ``update(prediction)`` returns the tracked detections with ``track_ids``.

    Args:
        kind: ``bytetrack`` (default), ``sort`` or ``ocsort``.
        frame_rate: frames per second of the source (how long a lost track is kept is counted in frames).
        options: passed to the tracker's constructor (e.g. ``track_activation_threshold=0.5``,
            ``lost_track_buffer=60``); an unknown name is an error that lists the valid ones.
    """

    def __init__(self, kind: str = "bytetrack", frame_rate: float = 30.0, **options: object) -> None:
        if kind not in TRACKERS:
            raise ValueError(f"tracker {kind!r} is not available; choose one of {', '.join(TRACKERS)}")
        package = import_optional("trackers", extra="track", purpose="tracking")
        tracker_class = getattr(package, TRACKERS[kind])
        accepted = set(inspect.signature(tracker_class.__init__).parameters) - {"self"}
        unknown = sorted(set(options) - accepted)
        if unknown:
            raise ValueError(f"{kind} has no option {unknown[0]!r}; its options: {', '.join(sorted(accepted))}")
        if "frame_rate" in accepted:
            options = {"frame_rate": frame_rate, **options}
        self.kind = kind
        self._tracker = tracker_class(**options)

    def update(self, prediction: Prediction) -> Prediction:
        """The detections of ``prediction`` that belong to a track, with their ``track_ids``."""
        tracked = self._tracker.update(prediction.to_supervision())
        ids = tracked.tracker_id if tracked.tracker_id is not None else np.full(len(tracked), -1)
        tracked = tracked[np.asarray(ids) >= 0]  # -1: a detection no track has taken (yet)
        result = Prediction.from_supervision(tracked, prediction.image_size, source=prediction.source)
        result.image, result.frame, result.category_ids = prediction.image, prediction.frame, prediction.category_ids
        if result.track_ids is None:  # nothing tracked in this frame
            result.track_ids = torch.zeros(0, dtype=torch.int64)
        return result


def track(predictions: Iterable[Prediction], tracker: Tracker) -> Iterator[Prediction]:
    """Each prediction of a frame sequence, tracked (frames without an index are numbered in order)."""
    for index, prediction in enumerate(predictions):
        if prediction.frame is None:
            prediction.frame = index
        yield tracker.update(prediction)


def write_mot(handle: TextIO, prediction: Prediction) -> int:
    """Append the tracked detections of one frame as MOT lines; returns how many were written."""
    if prediction.track_ids is None:
        raise ValueError("write_mot needs a tracked Prediction (Tracker.update sets track_ids)")
    frame = (prediction.frame or 0) + 1  # MOT frames count from 1
    for (x0, y0, x1, y1), score, label, track_id in zip(
        prediction.boxes.tolist(), prediction.scores.tolist(), prediction.labels.tolist(), prediction.track_ids.tolist()
    ):
        handle.write(f"{frame},{track_id},{x0:.2f},{y0:.2f},{x1 - x0:.2f},{y1 - y0:.2f},{score:.4f},{label}\n")
    return len(prediction)


class Trails:
    """The last ``length`` box centres of every track, for drawing trails."""

    def __init__(self, length: int = 30) -> None:
        self.length = length
        self._points: dict[int, deque[tuple[float, float]]] = {}

    def update(self, prediction: Prediction) -> dict[int, list[tuple[float, float]]]:
        """Add this frame's centres; returns the trail of each track present in the frame."""
        trails = {}
        for (x0, y0, x1, y1), track_id in zip(prediction.boxes.tolist(), prediction.track_ids.tolist()):
            points = self._points.setdefault(track_id, deque(maxlen=self.length))
            points.append(((x0 + x1) / 2, (y0 + y1) / 2))
            trails[track_id] = list(points)
        return trails

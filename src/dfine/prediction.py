"""One image's detections (:class:`Prediction`): boxes, scores, labels and names, drawable.

Shared by every inference path (the high-level :class:`dfine.DFINE` and the :mod:`dfine.deploy`
backends), so it sits below both.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.ops import clip_boxes_to_image

from .data.images import load_image
from .drawing import draw
from .optional import import_optional

__all__ = ["Detection", "Prediction", "to_predictions"]

# what indexes a Prediction: a position, a slice, a class name, or a mask / positions / names per detection
PredictionIndex = int | slice | str | torch.Tensor | np.ndarray | Sequence[bool] | Sequence[int] | Sequence[str]


@dataclass(frozen=True)
class Detection:
    """One detection: ``box`` xyxy in image pixels, ``score`` in [0, 1], 0-based ``label`` and its ``name``."""

    box: tuple[float, float, float, float]
    score: float
    label: int
    name: str


@dataclass
class Prediction:
    """Detections for one image, in that image's pixels.

    Attributes:
        boxes: ``[N, 4]`` float32 xyxy in original-image pixels, clipped to the image.
        scores: ``[N]`` confidences in [0, 1], best first.
        labels: ``[N]`` int64 class indices (0-based, contiguous).
        names: the class name of each detection (``N`` strings).
        image_size: original ``(width, height)`` in pixels.
        source: the file the image came from (the video, for a frame); None for in-memory inputs.
        image: the RGB image for in-memory inputs (None for files, which :meth:`draw` re-reads).
        category_ids: the dataset's category id of each label (``category_ids[label]``), for COCO records;
            None when the model has none (its labels are the ids then).
        frame: the 0-based frame index in ``source`` for a video frame, else None.
        track_ids: ``[N]`` int64 track id of each detection after tracking (:mod:`dfine.tracking`), else None.

    ``len(p)``, ``p[i]``, ``p[1:3]``, ``p[p.scores > 0.5]``, ``p["cat"]`` (one class) and ``for d in p``
    (:class:`Detection` each) work as on a list of detections; indexing returns a :class:`Prediction`.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    names: list[str]
    image_size: tuple[int, int]
    source: Path | None = None
    image: Image.Image | None = field(default=None, repr=False)
    category_ids: list[int] | None = None
    frame: int | None = None
    track_ids: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.scores)

    def __iter__(self) -> Iterator[Detection]:
        for box, score, label, name in zip(self.boxes.tolist(), self.scores.tolist(), self.labels.tolist(), self.names):
            yield Detection(box=tuple(box), score=score, label=label, name=name)

    def __getitem__(self, index: PredictionIndex) -> Prediction:
        rows = self._rows(index)
        return Prediction(
            boxes=self.boxes[rows],
            scores=self.scores[rows],
            labels=self.labels[rows],
            names=[self.names[i] for i in rows.tolist()],
            image_size=self.image_size,
            source=self.source,
            image=self.image,
            category_ids=self.category_ids,
            frame=self.frame,
            track_ids=self.track_ids[rows] if self.track_ids is not None else None,
        )

    def _rows(self, index: PredictionIndex) -> torch.Tensor:
        """The detection rows ``index`` selects, as an int64 tensor."""
        count = len(self)
        if isinstance(index, str):
            return torch.tensor([i for i, name in enumerate(self.names) if name == index], dtype=torch.int64)
        if isinstance(index, slice):
            return torch.arange(count)[index]
        if isinstance(index, int | np.integer) and not isinstance(index, bool):
            if not -count <= int(index) < count:
                raise IndexError(f"detection {int(index)} is out of range for {count} detections")
            return torch.tensor([int(index) % count], dtype=torch.int64)
        if isinstance(index, Sequence) and index and all(isinstance(item, str) for item in index):
            wanted = set(index)
            return torch.tensor([i for i, name in enumerate(self.names) if name in wanted], dtype=torch.int64)
        selector = torch.as_tensor(np.asarray(index) if not torch.is_tensor(index) else index).reshape(-1)
        if selector.dtype == torch.bool:
            if selector.numel() != count:
                raise IndexError(f"a boolean mask needs one entry per detection ({count}), got {selector.numel()}")
            return selector.nonzero().reshape(-1)
        if selector.numel() == 0:
            return torch.zeros(0, dtype=torch.int64)
        if selector.is_floating_point():
            raise TypeError(f"detections are indexed by positions, masks or class names, not {selector.dtype} values")
        if selector.numel() and not bool(((selector >= -count) & (selector < count)).all()):
            raise IndexError(f"a detection index is out of range for {count} detections")
        return selector.to(torch.int64) % max(count, 1)

    # -------------------------------------------------------------------------------- export
    def to_dict(self) -> dict[str, Any]:
        """Plain Python (JSON-ready): source, image size and one record per detection."""
        ids = self.category_ids
        return {
            "source": str(self.source) if self.source is not None else None,
            "image_size": list(self.image_size),
            "frame": self.frame,
            "category_ids": list(ids) if ids is not None else None,
            "detections": [
                {"box": list(d.box), "score": d.score, "label": d.label, "name": d.name,
                 "category_id": self._category_id(d.label)}
                | ({"track_id": track_id} if track_id is not None else {})
                for d, track_id in zip(self, self._track_list())
            ],
        }  # fmt: skip

    def _track_list(self) -> list[int | None]:
        return self.track_ids.tolist() if self.track_ids is not None else [None] * len(self)

    def to_json(self, **dumps_options: Any) -> str:
        """:meth:`to_dict` as a JSON string (``indent=2`` etc. pass through to :func:`json.dumps`)."""
        return json.dumps(self.to_dict(), **dumps_options)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Prediction:
        """The inverse of :meth:`to_dict` (no image: :meth:`draw` re-reads ``source``)."""
        detections = data.get("detections", [])
        return cls(
            boxes=torch.tensor([d["box"] for d in detections], dtype=torch.float32).reshape(-1, 4),
            scores=torch.tensor([d["score"] for d in detections], dtype=torch.float32),
            labels=torch.tensor([d["label"] for d in detections], dtype=torch.int64),
            names=[str(d["name"]) for d in detections],
            image_size=tuple(data["image_size"]),
            source=Path(data["source"]) if data.get("source") else None,
            category_ids=list(data["category_ids"]) if data.get("category_ids") is not None else None,
            frame=data.get("frame"),
            track_ids=(
                torch.tensor([d["track_id"] for d in detections], dtype=torch.int64)
                if detections and all("track_id" in d for d in detections)
                else None
            ),
        )

    @classmethod
    def from_json(cls, text: str) -> Prediction:
        return cls.from_dict(json.loads(text))

    def _category_id(self, label: int) -> int:
        ids = self.category_ids
        return int(ids[label]) if ids is not None and 0 <= label < len(ids) else label

    def to_coco(self, image_id: int, **extra: Any) -> list[dict[str, Any]]:
        """COCO results records: ``bbox`` [x, y, width, height] pixels, the dataset's ``category_id``, ``extra``."""
        return [
            {"image_id": image_id, **extra, "category_id": self._category_id(d.label), "category_name": d.name,
             "label": d.label, "bbox": [round(d.box[0], 2), round(d.box[1], 2), round(d.box[2] - d.box[0], 2),
             round(d.box[3] - d.box[1], 2)], "score": round(d.score, 5)}
            for d in self
        ]  # fmt: skip

    def to_supervision(self) -> Any:
        """``supervision.Detections`` with ``xyxy``, ``confidence``, ``class_id`` and ``data["class_name"]``."""
        sv = import_optional("supervision", extra="supervision", purpose="Prediction.to_supervision")
        return sv.Detections(
            xyxy=self.boxes.detach().cpu().numpy().astype(np.float32).reshape(-1, 4),
            confidence=self.scores.detach().cpu().numpy().astype(np.float32),
            class_id=self.labels.detach().cpu().numpy().astype(int),
            tracker_id=self.track_ids.cpu().numpy().astype(int) if self.track_ids is not None else None,
            data={"class_name": np.array(self.names, dtype=str)},
        )

    @classmethod
    def from_supervision(
        cls,
        detections: Any,
        image_size: tuple[int, int],
        class_names: Sequence[str] | None = None,
        source: str | Path | None = None,
    ) -> Prediction:
        """A :class:`Prediction` from ``supervision.Detections`` (names from ``data["class_name"]``, else
        ``class_names[class_id]``); a missing confidence is 1, a missing class id 0."""
        count = len(detections)
        labels = (
            np.zeros(count, dtype=np.int64) if detections.class_id is None else np.asarray(detections.class_id)
        ).astype(np.int64)
        scores = np.ones(count, dtype=np.float32) if detections.confidence is None else detections.confidence
        names = detections.data.get("class_name") if getattr(detections, "data", None) else None
        if names is None:
            names = [class_names[i] if class_names and 0 <= i < len(class_names) else f"class_{i}" for i in labels]
        return cls(
            boxes=torch.as_tensor(np.asarray(detections.xyxy, dtype=np.float32)).reshape(-1, 4),
            scores=torch.as_tensor(np.asarray(scores, dtype=np.float32)),
            labels=torch.as_tensor(labels),
            names=[str(name) for name in names],
            image_size=(int(image_size[0]), int(image_size[1])),
            source=Path(source) if source is not None else None,
            track_ids=(
                torch.as_tensor(np.asarray(detections.tracker_id, dtype=np.int64))
                if getattr(detections, "tracker_id", None) is not None
                else None
            ),
        )

    def draw(
        self,
        trails: Mapping[int, Sequence[tuple[float, float]]] | None = None,
        style: str = "auto",
        fade_below: float | None = None,
    ) -> Image.Image:
        """A copy of the image with each box and its ``"name score"`` label (:mod:`dfine.drawing`); tracked
        detections are labelled ``#id`` and coloured by track, with ``trails`` (track id -> recent centres).

        ``style``: ``"auto"`` (supervision's annotators when installed, else the built-in drawer), ``"dfine"`` or
        ``"supervision"``. ``fade_below``: detections scoring below it are drawn faded (see :func:`dfine.drawing.draw`).
        """
        if self.image is not None:
            image = self.image.copy()
        elif self.source is not None:
            image = load_image(self.source)
        else:
            raise ValueError("this Prediction has neither an image nor a source file to draw on")
        return draw(
            image,
            self.boxes.tolist(),
            self.scores.tolist(),
            self.labels.tolist(),
            self.names,
            self._track_list(),
            trails,
            style,
            fade_below,
        )

    def save(self, path: str | Path, style: str = "auto") -> Path:
        """Write :meth:`draw` (``style`` as there) to ``path`` (format from the extension; folders are created)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.draw(style=style).save(path)
        return path


def to_predictions(
    outputs: Sequence[Sequence[torch.Tensor]],
    images: Sequence[Image.Image],
    sources: Sequence[Path | None],
    conf_threshold: float,
    class_names: Sequence[str],
    category_ids: Sequence[int] | None = None,
) -> list[Prediction]:
    """Per-image :class:`Prediction` from batched outputs: threshold, clip, names.

    ``outputs`` is ``(labels, boxes, scores)``, each indexable per image (``[N, K]`` / ``[N, K, 4]``
    tensors or lists of per-image CPU tensors), boxes in pixels of the original image.

    ``sources[i]`` is the file image ``i`` came from (None for frames and in-memory images, whose
    image is kept for drawing).
    """
    predictions = []
    for labels, boxes, scores, image, source in zip(*outputs, images, sources):
        keep = scores >= conf_threshold
        labels = labels[keep]
        width, height = image.size
        predictions.append(
            Prediction(
                boxes=clip_boxes_to_image(boxes[keep], (height, width)),
                scores=scores[keep],
                labels=labels,
                names=[class_names[i] if i < len(class_names) else f"class_{i}" for i in labels.tolist()],
                image_size=(width, height),
                source=source,
                image=None if source is not None else image,
                category_ids=list(category_ids) if category_ids is not None else None,
            )
        )
    return predictions

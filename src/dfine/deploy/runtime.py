"""Detection with any backend: one pre-processing, one post-processing, four runtimes.

``open_backend(kind, ...)`` loads a model in PyTorch, onnxruntime, OpenVINO or TensorRT, and
:class:`BackendDetector` wraps any of them with the pipeline of :class:`dfine.DFINE`: images as
8-bit RGB (:func:`dfine.data.images.load_image`), squash-resized to the model's input size
(:func:`dfine.data.images.to_model_input`, the official resize), the original (width, height) as
``orig_target_sizes``; then a score threshold, boxes clipped to the image and class names. As only
the runtime call differs, the backends' detections agree to the last bits of fp32.

``resize="letterbox"`` keeps the aspect ratio instead (padding with gray); the backend then decodes boxes
normalized to the model input, and they are mapped back to the image here, the same for every backend.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from ..data.images import (
    ImageInput,
    ResizeMode,
    check_channels,
    check_resize,
    expand_sources,
    letterbox_boxes_to_image,
    letterbox_geometry,
    load_image,
    to_model_input,
)
from ..prediction import Prediction, to_predictions
from .backend import Backend, Outputs, TorchBackend
from .onnx import OnnxRuntimeBackend
from .openvino import OpenVINOBackend
from .tensorrt import TensorRTBackend
from .video import VideoReader, is_video
from .wrapper import load_deploy_model

__all__ = [
    "BACKENDS", "BackendDetector", "Frame", "iter_frames", "open_backend", "preprocess", "to_predictions",
    "video_frames",
]  # fmt: skip

BACKENDS: tuple[str, ...] = ("torch", "onnx", "openvino", "tensorrt")


def open_backend(
    kind: str,
    model_file: str | Path | None = None,
    *,
    config: str | Path | None = None,
    size: str | None = None,
    device: str | None = None,
    threads: int | None = None,
    fix: str | None = None,
) -> Backend:
    """Load a model in one runtime.

    Args:
        kind: ``torch``, ``onnx``, ``openvino`` or ``tensorrt``.
        model_file: the checkpoint (torch), ``.onnx`` (onnx, openvino), ``.xml`` (openvino) or engine
            (tensorrt).
        config: torch only: the YAML config the checkpoint was trained with (``-c``); without it the
            size and class count come from the checkpoint.
        size: torch only: the preset size when there is no config (inferred from the checkpoint if None).
        device: ``cpu``/``cuda[:N]``; OpenVINO device names (``CPU``, ``GPU``) for openvino.
        threads: CPU threads for onnxruntime and OpenVINO (None: the runtime's default).
        fix: torch only: the end of the error for weights that fit no preset (the command's remedy).
    """
    if kind not in BACKENDS:
        raise ValueError(f"unknown backend {kind!r}; choose one of {', '.join(BACKENDS)}")
    if kind == "torch":
        model, metadata = load_deploy_model(config, model_file, size=size, **({"fix": fix} if fix else {}))
        return TorchBackend(model, metadata, device, fast=True)
    if model_file is None:
        raise ValueError(f"the {kind} backend needs the exported model file (see 'dfine export')")
    if config is not None:
        raise ValueError(f"-c/--config applies to the torch backend; the {kind} file holds its model")
    if kind == "onnx":
        return OnnxRuntimeBackend(model_file, device, threads)
    if kind == "openvino":
        return OpenVINOBackend(model_file, device, threads)
    return TensorRTBackend(model_file, device)


@dataclass(frozen=True)
class Frame:
    """One decoded video frame: the RGB image, the video it came from and its 0-based index."""

    image: Image.Image
    video: Path
    index: int


def video_frames(source: str | Path | int) -> Iterator[Frame]:
    """The frames of a video file, camera index or stream URL, decoded one at a time as they are asked for."""
    with VideoReader(source) as reader:
        for index, image in enumerate(reader):
            yield Frame(image, Path(str(source)), index)


def iter_frames(items: Iterable[ImageInput]) -> Iterator[ImageInput | Frame]:
    """``items`` with each video file replaced by its frames (:func:`video_frames`: memory stays flat)."""
    for item in items:
        if isinstance(item, str | Path) and is_video(item):
            yield from video_frames(item)
        else:
            yield item


def preprocess(
    images: Sequence[Image.Image], image_size: int, resize: ResizeMode = "squash"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``images [N, 3, S, S]`` in [0, 1] and the ``orig_target_sizes [N, 2]`` (width, height) to decode boxes with.

    ``"squash"``: each image's own size, so boxes come back in its pixels. ``"letterbox"``: ``(1, 1)``, so boxes come
    back normalized to the model input; times ``S``, :func:`~dfine.data.images.letterbox_boxes_to_image` maps them to
    the image (pixels from the backend would be rounded to fp32 before the offset and scale are undone, so a square
    image would miss the squash's boxes by an ulp).
    """
    if check_resize(resize) == "letterbox":
        sizes = torch.ones(len(images), 2, dtype=torch.int64)
    else:
        sizes = torch.tensor([image.size for image in images], dtype=torch.int64)  # PIL size is (w, h)
    return to_model_input(images, image_size, resize), sizes


def _letterbox_boxes_to_images(
    boxes_normalized: Sequence[torch.Tensor], images: Sequence[Image.Image], image_size: int
) -> list[torch.Tensor]:
    """Per image, boxes ``[K, 4]`` xyxy normalized to the letterboxed input -> float32 original-image pixels."""
    return [
        letterbox_boxes_to_image(
            boxes.to(torch.float64) * image_size, letterbox_geometry(*image.size, image_size)
        ).float()
        for boxes, image in zip(boxes_normalized, images)
    ]


class BackendDetector:
    """:class:`dfine.DFINE`'s ``predict`` on any backend.

    Args:
        backend: a loaded model (:func:`open_backend`).
        class_names: one name per class; default: the names stored with the model.
    """

    def __init__(self, backend: Backend, class_names: Sequence[str] | None = None) -> None:
        self.backend = backend
        self.class_names = list(class_names) if class_names is not None else list(backend.metadata.class_names)
        if len(self.class_names) != backend.metadata.num_classes:
            raise ValueError(
                f"{len(self.class_names)} class names for a model with {backend.metadata.num_classes} classes; "
                "pass one name per class"
            )

    @property
    def category_ids(self) -> list[int]:
        """The dataset's category id of each label (stored with the model), for COCO results."""
        return list(self.backend.metadata.category_ids)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        return self.backend.image_size

    def _run(self, images: list[Image.Image], image_size: int, resize: ResizeMode = "squash") -> Outputs:
        """The backend on a batch; a static-batch model gets padded / split batches."""
        fixed = self.backend.fixed_batch
        if fixed is None:
            return self.backend(*preprocess(images, image_size, resize))
        chunks = []
        for start in range(0, len(images), fixed):
            chunk = images[start : start + fixed]
            padded = chunk + [chunk[-1]] * (fixed - len(chunk))  # repeat the last image to fill the batch
            chunks.append([out[: len(chunk)] for out in self.backend(*preprocess(padded, image_size, resize))])
        return tuple(torch.cat(parts) for parts in zip(*chunks))

    def _input_size(self, image_size: int | None) -> int:
        if image_size is None or image_size == self.image_size:
            return self.image_size
        if not self.backend.any_input_size:
            raise ValueError(
                f"this {self.backend.name} model takes {self.image_size}x{self.image_size} inputs, not "
                f"{image_size}; re-export it for another size"
            )
        if image_size <= 0 or image_size % 32:
            raise ValueError(f"image_size must be a positive multiple of 32 (the model's stride), got {image_size}")
        return image_size

    def detect(
        self,
        images: list[Image.Image],
        sources: Sequence[Path | None],
        conf_threshold: float = 0.25,
        image_size: int | None = None,
        resize: ResizeMode = "squash",
    ) -> list[Prediction]:
        """One batch of RGB images (any sizes) -> one :class:`Prediction` each (``resize``: ``"squash"`` or
        ``"letterbox"``, as in :meth:`dfine.DFINE.predict`)."""
        if not 0.0 <= conf_threshold <= 1.0:
            raise ValueError(f"conf_threshold must be in [0, 1], got {conf_threshold}")
        side = self._input_size(image_size)
        labels, boxes, scores = self._run(images, side, check_resize(resize))
        if resize == "letterbox":  # the boxes came back normalized to the model input (see preprocess)
            boxes = _letterbox_boxes_to_images(boxes, images, side)
        outputs = (labels, boxes, scores)
        return to_predictions(outputs, images, sources, conf_threshold, self.class_names, self.category_ids)

    def iter_predict(
        self,
        items: Iterable[ImageInput | Frame],
        conf_threshold: float = 0.25,
        batch_size: int = 8,
        image_size: int | None = None,
        channels: str = "rgb",
        resize: ResizeMode = "squash",
    ) -> Iterator[Prediction]:
        """Predictions for ``items`` (paths, PIL images, arrays...), batch by batch, in order."""
        check_resize(resize)
        if not 0.0 <= conf_threshold <= 1.0:
            raise ValueError(f"conf_threshold must be in [0, 1], got {conf_threshold}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        side = self._input_size(image_size)
        batch: list[ImageInput] = []
        for item in items:
            batch.append(item)
            if len(batch) == batch_size:
                yield from self._predict_items(batch, conf_threshold, side, channels, resize)
                batch = []
        if batch:
            yield from self._predict_items(batch, conf_threshold, side, channels, resize)

    def _predict_items(
        self,
        items: list[ImageInput | Frame],
        conf_threshold: float,
        image_size: int,
        channels: str,
        resize: ResizeMode = "squash",
    ) -> list[Prediction]:
        images = [item.image if isinstance(item, Frame) else load_image(item, channels) for item in items]
        sources = [item if isinstance(item, Path) else None for item in items]  # files are re-read to draw
        predictions = self.detect(images, sources, conf_threshold, image_size, resize)
        for prediction, item in zip(predictions, items):
            if isinstance(item, Frame):  # a frame keeps its image, and says where it came from
                prediction.source, prediction.frame = item.video, item.index
        return predictions

    def predict(
        self,
        source: ImageInput | Sequence[ImageInput],
        conf_threshold: float = 0.25,
        image_size: int | None = None,
        batch_size: int = 8,
        channels: str = "rgb",
        stream: bool = False,
        resize: ResizeMode = "squash",
    ) -> list[Prediction] | Iterator[Prediction]:
        """Detect objects in images and videos, as :meth:`dfine.DFINE.predict` (same arguments and results).

        ``image_size``: None for the model's input size; another multiple of 32 on the torch backend
        only (an exported model has a fixed one).
        """
        check_channels(channels)  # both before any image is read (or downloaded)
        check_resize(resize)
        predictions = self.iter_predict(
            iter_frames(expand_sources(source)), conf_threshold, batch_size, image_size, channels, resize
        )
        return predictions if stream else list(predictions)

"""High-level inference: ``DFINE.from_checkpoint(path).predict(images)`` -> one :class:`Prediction` each.

The pipeline is the official one (``tools/inference/torch_inf.py``): each image, as 8-bit RGB, is
squash-resized to ``image_size x image_size`` (bilinear, no letterbox), scaled to [0, 1], run through
the deployed model, and decoded by the post-processor with the original (width, height), so boxes
come back in original-image pixels. Image decoding rules (EXIF, alpha, 16-bit, ...) are in
:mod:`dfine.data.images`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.ops import clip_boxes_to_image

from .config.presets import model_config, model_config_from_dict
from .data.coco_classes import COCO_CLASS_NAMES
from .data.images import ImageInput, expand_sources, load_image, to_model_input
from .engine.checkpoint import extract_state_dict, infer_model_size, load_checkpoint, preset_config_for, read_checkpoint
from .model.dfine import DFINE as DFINEModel
from .model.postprocess import PostProcessor

__all__ = [
    "DFINE",
    "Prediction",
    "RandomWeightsWarning",
    "default_class_names",
    "infer_model_size",
    "resolve_device",
    "to_predictions",
]

# Distinct, saturated colours (RGB); class ``k`` is drawn in ``_PALETTE[k % len(_PALETTE)]``.
_PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
)  # fmt: skip


class RandomWeightsWarning(UserWarning):
    """A detector was built without trained weights, so its detections are meaningless."""


def default_class_names(num_classes: int) -> list[str]:
    """The 80 COCO names for an 80-class model, else ``class_0 .. class_{num_classes-1}``."""
    if num_classes == len(COCO_CLASS_NAMES):
        return list(COCO_CLASS_NAMES)
    return [f"class_{i}" for i in range(num_classes)]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a ``torch.device``; None picks CUDA when available, else the CPU.

    Raises:
        ValueError: an unknown device name, or CUDA / MPS asked for where it is not available.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"unknown device {device!r} ({err}); use 'cpu', 'cuda' or 'cuda:N'") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available here; use device 'cpu'")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} asked for, but MPS is not available here; use device 'cpu'")
    return resolved


def _text_color(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light backgrounds, white on dark ones (ITU-R BT.601 luma)."""
    red, green, blue = background
    return (0, 0, 0) if 0.299 * red + 0.587 * green + 0.114 * blue > 140 else (255, 255, 255)


def _label_font(image_height: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's built-in font, about 1/40 of the image height (at least 12 px) where PIL can scale it."""
    size = max(12, round(image_height / 40))
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: only the fixed-size bitmap font
        return ImageFont.load_default()


@dataclass
class Prediction:
    """Detections for one image, in that image's pixels.

    Attributes:
        boxes: ``[N, 4]`` float32 xyxy in original-image pixels, clipped to the image.
        scores: ``[N]`` confidences in [0, 1], best first.
        labels: ``[N]`` int64 class indices (0-based, contiguous).
        names: the class name of each detection (``N`` strings).
        image_size: original ``(width, height)`` in pixels.
        source: the file the image came from; None for in-memory inputs.
        image: the RGB image for in-memory inputs (None for files, which :meth:`draw` re-reads).
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    names: list[str]
    image_size: tuple[int, int]
    source: Path | None = None
    image: Image.Image | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.scores)

    def draw(self) -> Image.Image:
        """A copy of the image with each box and its ``"name score"`` label (one colour per class)."""
        if self.image is not None:
            image = self.image.copy()
        elif self.source is not None:
            image = load_image(self.source)
        else:
            raise ValueError("this Prediction has neither an image nor a source file to draw on")
        canvas = ImageDraw.Draw(image)
        font = _label_font(image.height)
        line_width = max(1, round(max(image.size) / 320))
        detections = zip(self.boxes.tolist(), self.scores.tolist(), self.labels.tolist(), self.names)
        for box, score, label, name in detections:
            color = _PALETTE[label % len(_PALETTE)]
            canvas.rectangle(box, outline=color, width=line_width)
            text = f"{name} {score:.2f}"
            left, top, right, bottom = canvas.textbbox((0, 0), text, font=font)
            text_w, text_h = right - left + 4, bottom - top + 4
            x0 = max(0, min(box[0], image.width - text_w))  # keep the label inside the image
            y0 = box[1] - text_h if box[1] >= text_h else box[1]  # above the box, inside at the top edge
            canvas.rectangle((x0, y0, x0 + text_w, y0 + text_h), fill=color)
            canvas.text((x0 + 2 - left, y0 + 2 - top), text, fill=_text_color(color), font=font)
        return image

    def save(self, path: str | Path) -> Path:
        """Write :meth:`draw` to ``path`` (format from the extension; folders are created)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.draw().save(path)
        return path


def to_predictions(
    outputs: Sequence[Sequence[torch.Tensor]],
    images: Sequence[Image.Image],
    sources: Sequence[Path | None],
    conf_threshold: float,
    class_names: Sequence[str],
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
            )
        )
    return predictions


class DFINE:
    """A D-FINE detector ready for inference on images of any size.

    Args:
        model: a size (``n``, ``s``, ``m``, ``l``, ``x``) to build with random weights (with a
            :class:`RandomWeightsWarning`), or a built ``dfine.DFINEModel``, used as it is (put in eval
            mode, not deployed). For trained weights use :meth:`from_checkpoint`.
        class_names: one name per class. Default: the COCO names for 80 classes, else ``class_i``.
            For a model built from a size, their number sets the class count.
        device: where to run; None picks CUDA when available, else the CPU.

    Attributes:
        model: the detector (eval mode, on ``device``).
        class_names: one name per class index.
        device: the ``torch.device`` used.
    """

    def __init__(
        self,
        model: str | DFINEModel = "n",
        *,
        class_names: Sequence[str] | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        if isinstance(model, str):
            num_classes = len(class_names) if class_names is not None else len(COCO_CLASS_NAMES)
            model = DFINEModel.from_config(model_config(model, num_classes=num_classes)).deploy()
            warnings.warn(
                "this D-FINE model has RANDOM weights, so its detections are meaningless; "
                "load trained weights with DFINE.from_checkpoint(path)",
                RandomWeightsWarning,
                stacklevel=2,
            )
        elif not isinstance(model, DFINEModel):
            raise TypeError(
                f"model must be a size ('n', 's', 'm', 'l', 'x') or a dfine.DFINEModel, got {type(model).__name__}"
            )
        names = list(class_names) if class_names is not None else default_class_names(model.num_classes)
        if len(names) != model.num_classes:
            raise ValueError(
                f"class_names has {len(names)} names but the model has {model.num_classes} classes; "
                "pass one name per class"
            )
        self.class_names = names
        spatial = model.decoder.eval_spatial_size
        self.input_size = int(spatial[0]) if spatial else 640
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.postprocessor = PostProcessor(num_classes=model.num_classes).to(self.device)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        size: str | None = None,
        class_names: Sequence[str] | None = None,
        device: str | torch.device | None = None,
    ) -> DFINE:
        """A deployed detector with the weights of an official or dfine checkpoint.

        Args:
            path: ``.pth`` file: official solver checkpoint (EMA weights win), ``{"model": sd}`` or a
                bare state_dict, in the train layout.
            size: the model size; None infers it from the weights (:func:`infer_model_size`).
            class_names: as in :class:`DFINE`; the class count always comes from the checkpoint.
            device: as in :class:`DFINE`.

        Raises:
            FileNotFoundError: no file at ``path``.
            CheckpointError: an unreadable file, a size that cannot be inferred, or weights that do
                not fit the model.
        """
        checkpoint = read_checkpoint(path)
        state, _ = extract_state_dict(checkpoint, path)
        meta = checkpoint.get("dfine") if isinstance(checkpoint, dict) else None
        if isinstance(meta, dict) and isinstance(meta.get("model"), dict) and size is None:
            # a dfine training checkpoint: its own model config (input size, queries...) and class names
            model = DFINEModel.from_config(model_config_from_dict(meta["model"]))
            load_checkpoint(model, path)
            names = class_names if class_names is not None else meta.get("class_names")
            return cls(model.deploy(), class_names=names, device=device)
        fix = "pass size= explicitly, or build the model with dfine.build_model(...) and use DFINE(model)"
        model = DFINEModel.from_config(preset_config_for(state, path, size, fix))
        load_checkpoint(model, path)  # strict: errors list the keys that do not fit
        return cls(model.deploy(), class_names=class_names, device=device)

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    def predict(
        self,
        source: ImageInput | Sequence[ImageInput],
        conf_threshold: float = 0.25,
        image_size: int | None = None,
        batch_size: int = 8,
    ) -> list[Prediction]:
        """Detect objects in one or more images.

        Args:
            source: an image path, a folder (its images, sorted), a PIL image, a numpy array
                (``HxW[xC]``), a tensor (``[C, H, W]``, or ``[B, C, H, W]`` for several), or a list of
                these. Any image size.
            conf_threshold: keep detections with score >= this, in [0, 1].
            image_size: side of the square model input in pixels, a multiple of 32; default: the size
                the model was built for (``eval_spatial_size``, 640 for the official models).
            batch_size: images per forward pass.

        Returns:
            One :class:`Prediction` per image, in input order.
        """
        if not 0.0 <= conf_threshold <= 1.0:
            raise ValueError(f"conf_threshold must be in [0, 1], got {conf_threshold}")
        if image_size is None:
            image_size = self.input_size
        if image_size <= 0 or image_size % 32:
            raise ValueError(f"image_size must be a positive multiple of 32 (the model's stride), got {image_size}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        items = expand_sources(source)
        predictions = []
        for start in range(0, len(items), batch_size):
            batch = items[start : start + batch_size]
            images = [load_image(item) for item in batch]
            predictions.extend(self._predict_batch(batch, images, conf_threshold, image_size))
        return predictions

    def _predict_batch(
        self, items: list[ImageInput], images: list[Image.Image], conf_threshold: float, image_size: int
    ) -> list[Prediction]:
        inputs = to_model_input(images, image_size).to(self.device)
        sizes_wh = torch.tensor([image.size for image in images], device=self.device)  # PIL size is (w, h)
        with torch.inference_mode():
            detections = self.postprocessor(self.model(inputs), sizes_wh)
        outputs = tuple([found[key].cpu() for found in detections] for key in ("labels", "boxes", "scores"))
        sources = [item if isinstance(item, Path) else None for item in items]
        return to_predictions(outputs, images, sources, conf_threshold, self.class_names)

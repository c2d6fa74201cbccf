"""One image's detections (:class:`Prediction`): boxes, scores, labels and names, drawable.

Shared by every inference path (the high-level :class:`dfine.DFINE` and the :mod:`dfine.deploy`
backends), so it sits below both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.ops import clip_boxes_to_image

from .data.images import load_image

__all__ = ["Prediction", "to_predictions"]

# Distinct, saturated colours (RGB); class ``k`` is drawn in ``_PALETTE[k % len(_PALETTE)]``.
_PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
)  # fmt: skip


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
        detections = list(zip(self.boxes.tolist(), self.scores.tolist(), self.labels.tolist(), self.names))
        # lowest score first, so the most confident box and label end up on top
        for box, score, label, name in sorted(detections, key=lambda detection: detection[1]):
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

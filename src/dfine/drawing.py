"""Drawing detections: class colours, label placement that keeps labels apart, and the drawer itself.

Labels are placed for the most confident detection first, each at the first free spot among: above its box,
inside its box at the top, below its box, inside at the bottom (all kept inside the image). A spot is free when
it covers neither a label already placed nor the most confident detection's box; when none is, the spot that
hides least wins, a covered label weighing more than a covered box. Boxes are then drawn lowest score first, so
the most confident box and label end up on top.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from PIL import Image, ImageDraw, ImageFont

__all__ = ["PALETTE", "class_color", "draw_detections", "place_labels"]

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels

# Distinct, saturated colours (RGB); class ``k`` is drawn in ``PALETTE[k % len(PALETTE)]`` in every image and run.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
)  # fmt: skip


def class_color(label: int) -> tuple[int, int, int]:
    """The colour of class ``label`` (the same in every image)."""
    return PALETTE[label % len(PALETTE)]


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


def _overlap(a: Box, b: Box) -> float:
    """Intersection area of two xyxy boxes (pixels²)."""
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


LABEL_OVER_LABEL = 10.0  # a label hidden under another costs this much more than a box partly covered


def _covered(label: Box, others: Sequence[Box]) -> float:
    """How much of ``others`` the label rectangle covers (pixels², summed)."""
    return sum(_overlap(label, other) for other in others)


def place_labels(
    boxes: Sequence[Box],
    label_sizes: Sequence[tuple[float, float]],
    scores: Sequence[float],
    image_size: tuple[int, int],
) -> list[Box]:
    """Where each detection's label goes (xyxy pixels), see the module docstring.

    Args:
        boxes: detection boxes, xyxy pixels.
        label_sizes: ``(width, height)`` of each label in pixels.
        scores: confidence of each detection (placement order: highest first).
        image_size: ``(width, height)``.
    """
    width, height = image_size
    order = sorted(range(len(boxes)), key=lambda i: -scores[i])
    placed: dict[int, Box] = {}
    for rank, i in enumerate(order):
        x0, y0, x1, y1 = boxes[i]
        w, h = label_sizes[i]
        left = max(0.0, min(x0, width - w))
        tops = [y0 - h, y0, y1, y1 - h]  # above, inside at the top, below, inside at the bottom
        spots = [(left, min(max(0.0, top), height - h), left + w, min(max(0.0, top), height - h) + h) for top in tops]
        best = [boxes[order[0]]] if rank else []  # the most confident detection stays visible

        def cost(spot: Box, labels: Sequence[Box] = tuple(placed.values()), best: Sequence[Box] = best) -> float:
            return LABEL_OVER_LABEL * _covered(spot, labels) + _covered(spot, best)

        placed[i] = min(spots, key=cost)  # the first free spot, else the one that hides least
    return [placed[i] for i in range(len(boxes))]


def draw_detections(
    image: Image.Image,
    boxes: Sequence[Box],
    scores: Sequence[float],
    labels: Sequence[int],
    names: Sequence[str],
    track_ids: Sequence[int | None] | None = None,
    trails: Mapping[int, Sequence[tuple[float, float]]] | None = None,
) -> Image.Image:
    """``image`` (modified in place and returned) with each box and its ``"name score"`` label.

    Tracked detections (``track_ids``) are labelled ``"#id name score"`` and coloured by track; ``trails`` maps a
    track id to its recent box centres (pixels), drawn as a line.
    """
    canvas = ImageDraw.Draw(image)
    font = _label_font(image.height)
    line_width = max(1, round(max(image.size) / 320))
    track_ids = list(track_ids) if track_ids is not None else [None] * len(boxes)
    colors = [class_color(label if track is None else track) for label, track in zip(labels, track_ids)]
    for track, trail in (trails or {}).items():
        if len(trail) > 1:
            canvas.line([tuple(point) for point in trail], fill=class_color(track), width=line_width)
    texts = [
        f"{'' if track is None else f'#{track} '}{name} {score:.2f}"
        for name, score, track in zip(names, scores, track_ids)
    ]
    extents = [canvas.textbbox((0, 0), text, font=font) for text in texts]
    sizes = [(right - left + 4, bottom - top + 4) for left, top, right, bottom in extents]
    spots = place_labels(boxes, sizes, scores, image.size)
    for i in sorted(range(len(boxes)), key=lambda k: scores[k]):  # lowest score first: the best ends on top
        color = colors[i]
        canvas.rectangle(tuple(boxes[i]), outline=color, width=line_width)
        canvas.rectangle(spots[i], fill=color)
        left, top = extents[i][:2]
        canvas.text((spots[i][0] + 2 - left, spots[i][1] + 2 - top), texts[i], fill=_text_color(color), font=font)
    return image

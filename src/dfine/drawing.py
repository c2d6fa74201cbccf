"""Drawing detections: class colours, label placement that keeps labels apart, and the drawer itself.

Labels are placed for the most confident detection first, each at the first free spot among: above its box,
inside its box at the top, below its box, inside at the bottom — aligned with the box's left edge, then the same
four aligned with its right edge (all kept inside the image). A spot is free when
it covers neither a label already placed nor the most confident detection's box; when none is, the spot that
hides least wins, a covered label weighing more than a covered box. Boxes are then drawn lowest score first, and
the labels after them in the same order, so the most confident box and label end up on top and no box line
crosses a label.

With the ``supervision`` extra installed, :func:`draw` prefers its annotators (``BoxAnnotator`` and
``LabelAnnotator`` with its overlap-avoiding ``smart_position``) in the same colours; ``style="dfine"`` keeps the
built-in drawer, ``style="supervision"`` requires the extra.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .optional import import_optional

__all__ = [
    "DRAW_STYLES",
    "PALETTE",
    "class_color",
    "draw",
    "draw_detections",
    "draw_detections_supervision",
    "place_labels",
    "resolve_style",
]

DRAW_STYLES = ("auto", "dfine", "supervision")  # auto: supervision's annotators when installed, else dfine's
Trails = Mapping[int, Sequence[tuple[float, float]]]  # track id -> recent box centres (pixels)

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
    """PIL's built-in font, about 1/32 of the image height (at least 12 px) where PIL can scale it."""
    size = max(12, round(image_height / 32))
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


def _clamp(spot: Box, width: int, height: int) -> Box:
    """``spot`` moved (not resized) to lie inside a ``width x height`` image."""
    x0, y0, x1, y1 = spot
    dx = max(0.0, -x0) - max(0.0, x1 - width)
    dy = max(0.0, -y0) - max(0.0, y1 - height)
    return (x0 + dx, y0 + dy, x1 + dx, y1 + dy)


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
        tops = [y0 - h, y0, y1, y1 - h]  # above, inside at the top, below, inside at the bottom
        lefts = [x0, x1 - w]  # aligned with the box's left edge, then with its right edge
        spots = [_clamp((x, top, x + w, top + h), width, height) for x in lefts for top in tops]
        best = [boxes[order[0]]] if rank else []  # the most confident detection stays visible

        def cost(spot: Box, labels: Sequence[Box] = tuple(placed.values()), best: Sequence[Box] = best) -> float:
            return LABEL_OVER_LABEL * _covered(spot, labels) + _covered(spot, best)

        placed[i] = min(spots, key=cost)  # the first free spot, else the one that hides least
    return [placed[i] for i in range(len(boxes))]


def _line_width(image: Image.Image) -> int:
    return max(1, round(max(image.size) / 320))


def _draw_trails(canvas: ImageDraw.ImageDraw, trails: Trails | None, line_width: int) -> None:
    for track, trail in (trails or {}).items():
        if len(trail) > 1:
            canvas.line([tuple(point) for point in trail], fill=class_color(track), width=line_width)


def _label_texts(names: Sequence[str], scores: Sequence[float], track_ids: Sequence[int | None]) -> list[str]:
    return [
        f"{'' if track is None else f'#{track} '}{name} {score:.2f}"
        for name, score, track in zip(names, scores, track_ids)
    ]


def draw_detections(
    image: Image.Image,
    boxes: Sequence[Box],
    scores: Sequence[float],
    labels: Sequence[int],
    names: Sequence[str],
    track_ids: Sequence[int | None] | None = None,
    trails: Trails | None = None,
) -> Image.Image:
    """``image`` (modified in place and returned) with each box and its ``"name score"`` label.

    Tracked detections (``track_ids``) are labelled ``"#id name score"`` and coloured by track; ``trails`` maps a
    track id to its recent box centres (pixels), drawn as a line.
    """
    canvas = ImageDraw.Draw(image)
    font = _label_font(image.height)
    line_width = _line_width(image)
    track_ids = list(track_ids) if track_ids is not None else [None] * len(boxes)
    colors = [class_color(label if track is None else track) for label, track in zip(labels, track_ids)]
    _draw_trails(canvas, trails, line_width)
    texts = _label_texts(names, scores, track_ids)
    extents = [canvas.textbbox((0, 0), text, font=font) for text in texts]
    sizes = [(right - left + 4, bottom - top + 4) for left, top, right, bottom in extents]
    spots = place_labels(boxes, sizes, scores, image.size)
    order = sorted(range(len(boxes)), key=lambda k: scores[k])  # lowest score first: the best ends on top
    for i in order:
        canvas.rectangle(tuple(boxes[i]), outline=colors[i], width=line_width)
    for i in order:  # labels after every box, so no box line crosses a label's text
        color = colors[i]
        canvas.rectangle(spots[i], fill=color)
        left, top = extents[i][:2]
        canvas.text((spots[i][0] + 2 - left, spots[i][1] + 2 - top), texts[i], fill=_text_color(color), font=font)
    return image


def draw_detections_supervision(
    image: Image.Image,
    boxes: Sequence[Box],
    scores: Sequence[float],
    labels: Sequence[int],
    names: Sequence[str],
    track_ids: Sequence[int | None] | None = None,
    trails: Trails | None = None,
) -> Image.Image:
    """:func:`draw_detections` through supervision's ``BoxAnnotator`` and ``LabelAnnotator`` (``smart_position``
    moves overlapping labels apart): same colours, labels, line width and draw order; returns a new image."""
    sv = import_optional("supervision", extra="supervision", purpose="drawing with supervision's annotators")
    track_list = list(track_ids) if track_ids is not None else [None] * len(boxes)
    tracked = len(track_list) > 0 and all(track is not None for track in track_list)
    order = np.argsort(np.asarray(scores, dtype=np.float64), kind="stable")  # lowest score first: the best on top
    detections = sv.Detections(
        xyxy=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        confidence=np.asarray(scores, dtype=np.float32),
        class_id=np.asarray(labels, dtype=int),
        tracker_id=np.asarray(track_list, dtype=int) if tracked else None,
    )[order]
    texts = _label_texts(names, scores, track_list)
    palette = sv.ColorPalette([sv.Color(*rgb) for rgb in PALETTE])
    text_palette = sv.ColorPalette([sv.Color(*_text_color(rgb)) for rgb in PALETTE])
    lookup = sv.ColorLookup.TRACK if tracked else sv.ColorLookup.CLASS
    line_width = _line_width(image)
    _draw_trails(ImageDraw.Draw(image), trails, line_width)
    boxes_drawn = sv.BoxAnnotator(color=palette, thickness=line_width, color_lookup=lookup).annotate(image, detections)
    return sv.LabelAnnotator(
        color=palette,
        text_color=text_palette,
        text_scale=sv.calculate_optimal_text_scale(image.size),
        text_thickness=line_width,
        text_padding=max(2, line_width * 3),
        color_lookup=lookup,
        smart_position=True,
    ).annotate(boxes_drawn, detections, labels=[texts[i] for i in order])


def resolve_style(style: str) -> str:
    """``"dfine"`` or ``"supervision"``: ``"auto"`` is supervision when it is installed."""
    if style not in DRAW_STYLES:
        raise ValueError(f"unknown drawing style {style!r}; choose one of {', '.join(DRAW_STYLES)}")
    if style == "auto":
        return "supervision" if importlib.util.find_spec("supervision") is not None else "dfine"
    return style


LOW_CONFIDENCE_OPACITY = 0.35  # how strongly a faded (low-confidence) detection shows through


def draw(
    image: Image.Image,
    boxes: Sequence[Box],
    scores: Sequence[float],
    labels: Sequence[int],
    names: Sequence[str],
    track_ids: Sequence[int | None] | None = None,
    trails: Trails | None = None,
    style: str = "auto",
    fade_below: float | None = None,
) -> Image.Image:
    """The detections drawn on ``image`` by the drawer ``style`` names (:func:`resolve_style`).

    ``fade_below``: detections scoring below it are drawn first and faded (35 % opacity), so they stay visible
    without competing with the confident ones; None draws every detection alike.
    """
    drawer = draw_detections_supervision if resolve_style(style) == "supervision" else draw_detections
    ids = list(track_ids) if track_ids is not None else [None] * len(boxes)
    if fade_below is None:
        return drawer(image, boxes, scores, labels, names, ids, trails)
    low = [i for i, score in enumerate(scores) if score < fade_below]
    high = [i for i, score in enumerate(scores) if score >= fade_below]

    def pick(indices: list[int]) -> tuple[list, ...]:
        return tuple([values[i] for i in indices] for values in (boxes, scores, labels, names, ids))

    if low:
        faded = drawer(image.copy(), *pick(low))
        image = Image.blend(image, faded.convert(image.mode), LOW_CONFIDENCE_OPACITY)
    return drawer(image, *pick(high), trails)

"""The built-in drawer beside supervision's annotators on synthetic demo scenes (a picture for RESULTS.md).

Three scenes of the synthetic set (``dfine.data.synthetic``, the README demo's data, here at 480 px) are drawn with
detections made from their ground truth: every object at a score that falls with its index, plus for each a weaker
duplicate shifted by a few pixels (what a detector emits below its best box) so that labels compete for space.
Left column: ``style="dfine"``; right: ``style="supervision"``. Written as one JPEG; also prints, per drawer, how many
label pairs overlap and how many labels cover the most confident box (the placement rules of
:mod:`dfine.drawing`), measured on the drawn label rectangles where the drawer exposes them (the built-in one).

Usage::

    python benchmarks/drawing_side_by_side.py benchmarks/drawing_side_by_side.jpg [--json counts.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from dfine.data.synthetic import SynthConfig, render_image
from dfine.drawing import _label_font, _label_texts, _overlap, draw, place_labels

SCENES = 3
SIZE = 480


def scene(seed: int) -> tuple[Image.Image, list, list, list, list]:
    """A synthetic image and detections from its objects: boxes, scores, labels, names."""
    cfg = SynthConfig(image_size=SIZE, seed=seed, min_objects=5, max_objects=8, empty_fraction=0.0)
    image, objects = render_image(np.random.default_rng(seed), cfg, empty=False)
    boxes, scores, labels, names = [], [], [], []
    for k, obj in enumerate(objects):
        x, y, w, h = obj["bbox"]
        label = obj["category_id"] - 1
        for shift, score in ((0.0, 0.95 - 0.06 * k), (6.0, 0.4 - 0.03 * k)):  # the detection and a weak duplicate
            boxes.append((x + shift, y + shift, x + w + shift, y + h + shift))
            scores.append(round(score, 2))
            labels.append(label)
            names.append(cfg.classes[label])
    return image, boxes, scores, labels, names


def builtin_label_overlaps(image: Image.Image, boxes, scores, labels, names) -> tuple[int, int]:
    """(label pairs that overlap, labels over the most confident box) of the built-in placement."""
    font = _label_font(image.height)
    canvas = ImageDraw.Draw(image.copy())
    texts = _label_texts(names, scores, [None] * len(boxes))
    sizes = [(r - left + 4, b - t + 4) for left, t, r, b in (canvas.textbbox((0, 0), s, font=font) for s in texts)]
    spots = place_labels(boxes, sizes, scores, image.size)
    best = boxes[int(np.argmax(scores))]
    pairs = sum(_overlap(a, b) > 0 for i, a in enumerate(spots) for b in spots[i + 1 :])
    over_best = sum(_overlap(spot, best) > 0 for i, spot in enumerate(spots) if boxes[i] is not best)
    return pairs, over_best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--json", type=Path, help="also write the per-scene label counts to this JSON file")
    args = parser.parse_args()
    counts = []
    gap = 8
    sheet = Image.new("RGB", (2 * SIZE + gap, SCENES * SIZE + (SCENES - 1) * gap), "white")
    for row in range(SCENES):
        image, *detections = scene(seed=row + 1)
        pairs, over_best = builtin_label_overlaps(image, *detections)
        counts.append({"scene": row + 1, "detections": len(detections[0]), "overlapping_label_pairs": pairs,
                       "labels_over_best_box": over_best})  # fmt: skip
        print(
            f"scene {row + 1}: {len(detections[0])} detections; built-in placement: {pairs} overlapping label "
            f"pairs, {over_best} labels over the best box"
        )
        for column, style in enumerate(("dfine", "supervision")):
            sheet.paste(draw(image.copy(), *detections, style=style), (column * (SIZE + gap), row * (SIZE + gap)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, quality=88)
    print(f"wrote {args.out} (left: dfine, right: supervision)")
    if args.json is not None:
        args.json.write_text(json.dumps({"image": str(args.out), "scenes": counts}, indent=1))


if __name__ == "__main__":
    main()

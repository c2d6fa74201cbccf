"""Label placement and the drawer (:mod:`dfine.drawing`)."""

from __future__ import annotations

import importlib.util
import sys

import pytest
from PIL import Image

from dfine.drawing import PALETTE, _overlap, class_color, draw, draw_detections, place_labels, resolve_style

LABEL = (40.0, 12.0)  # width, height of every label in these tests


def _no_two_overlap(spots):
    return all(_overlap(a, b) == 0 for k, a in enumerate(spots) for b in spots[k + 1 :])


def test_labels_of_boxes_with_a_shared_top_edge_do_not_overlap():
    boxes = [(50.0, 50.0, 150.0, 150.0), (60.0, 50.0, 160.0, 140.0), (55.0, 50.0, 140.0, 160.0)]
    spots = place_labels(boxes, [LABEL] * 3, [0.9, 0.8, 0.7], (300, 300))
    assert _no_two_overlap(spots)
    assert spots[0] == (50.0, 38.0, 90.0, 50.0)  # the most confident keeps the spot above its box


def test_a_box_at_the_top_edge_gets_its_label_inside():
    (spot,) = place_labels([(10.0, 0.0, 100.0, 80.0)], [LABEL], [0.5], (200, 200))
    assert spot == (10.0, 0.0, 50.0, 12.0)
    (corner,) = place_labels([(190.0, 190.0, 200.0, 200.0)], [LABEL], [0.5], (200, 200))  # near the far corner
    assert corner[0] >= 0 and corner[2] <= 200 and corner[1] >= 0 and corner[3] <= 200


def test_weaker_labels_do_not_cover_a_more_confident_box():
    strong = (40.0, 20.0, 200.0, 100.0)
    weak = (40.0, 112.0, 120.0, 190.0)  # its label above would sit on the strong box's lower edge
    spots = place_labels([strong, weak], [LABEL, LABEL], [0.9, 0.4], (300, 300))
    assert _overlap(spots[1], strong) == 0 and _no_two_overlap(spots)


def test_colours_are_stable_per_class_and_drawing_is_deterministic():
    assert class_color(3) == PALETTE[3] and class_color(3 + len(PALETTE)) == PALETTE[3]
    args = ([(20.0, 30.0, 120.0, 90.0), (25.0, 35.0, 110.0, 95.0)], [0.8, 0.6], [1, 3], ["a", "b"])
    first = draw_detections(Image.new("RGB", (160, 120), "white"), *args)
    second = draw_detections(Image.new("RGB", (160, 120), "white"), *args)
    assert first.tobytes() == second.tobytes()
    assert first.getpixel((21, 20)) == PALETTE[1]  # the best label, above its box


SCENE = (
    [(20.0, 30.0, 120.0, 90.0), (25.0, 35.0, 110.0, 95.0), (140.0, 40.0, 200.0, 110.0)],
    [0.8, 0.6, 0.9],
    [1, 3, 0],
    ["a", "b", "c"],
)


def test_supervision_drawer_uses_the_same_colours_order_and_labels():
    pytest.importorskip("supervision")  # in the dev extra; CI installs it
    first = draw(Image.new("RGB", (240, 160), "white"), *SCENE, style="supervision")
    second = draw(Image.new("RGB", (240, 160), "white"), *SCENE, style="supervision")
    assert first.tobytes() == second.tobytes()
    assert first.getpixel((140, 75)) == PALETTE[0] and first.getpixel((20, 60)) == PALETTE[1]  # class colours
    builtin = draw(Image.new("RGB", (240, 160), "white"), *SCENE, style="dfine")
    assert builtin.tobytes() != first.tobytes()  # really another drawer
    tracked = draw(Image.new("RGB", (240, 160), "white"), *SCENE, track_ids=[7, 8, 9], style="supervision")
    assert tracked.getpixel((20, 60)) == PALETTE[7]  # coloured by track


def test_auto_prefers_supervision_and_falls_back_to_the_builtin_drawer(monkeypatch):
    pytest.importorskip("supervision")
    assert resolve_style("auto") == "supervision" and resolve_style("dfine") == "dfine"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)  # as without the extra
    assert resolve_style("auto") == "dfine"
    with pytest.raises(ValueError, match="unknown drawing style 'fancy'; choose one of auto, dfine, supervision"):
        resolve_style("fancy")


def test_supervision_style_without_the_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "supervision", None)  # import supervision -> ImportError
    with pytest.raises(ImportError, match=r"pip install dfine\[supervision\]"):
        draw(Image.new("RGB", (50, 50)), *SCENE, style="supervision")


def test_no_box_line_crosses_a_label():
    weak, middle, best = (20.0, 40.0, 100.0, 100.0), (30.0, 10.0, 200.0, 200.0), (250.0, 250.0, 290.0, 290.0)
    drawn = draw_detections(
        Image.new("RGB", (300, 300), "white"), [weak, middle, best], [0.3, 0.6, 0.9], [2, 1, 0], ["w", "m", "b"]
    )
    # the middle box's left edge (x = 30) runs through the weak box's label above it; the label stays whole
    assert drawn.getpixel((30, 5 + 40 - 12)) != PALETTE[1]
    assert drawn.getpixel((30, 150)) == PALETTE[1]  # the edge itself is drawn


@pytest.mark.parametrize("style", ["dfine", "supervision"])
def test_low_confidence_detections_can_be_faded(style):
    if style == "supervision":
        pytest.importorskip("supervision")
    boxes = [(20.0, 40.0, 100.0, 120.0), (150.0, 40.0, 230.0, 120.0)]
    args = (boxes, [0.9, 0.2], [0, 1], ["sure", "unsure"])
    faded = draw(Image.new("RGB", (260, 160), "white"), *args, style=style, fade_below=0.5)
    plain = draw(Image.new("RGB", (260, 160), "white"), *args, style=style)
    assert faded.getpixel((20, 80)) == plain.getpixel((20, 80)) == PALETTE[0]  # the confident box: full colour
    edge = faded.getpixel((150, 80))  # the unsure box's left edge: 35 % of its colour over the white image
    expected = tuple(round(0.35 * c + 0.65 * 255) for c in PALETTE[1])
    assert plain.getpixel((150, 80)) == PALETTE[1] and all(abs(a - b) <= 2 for a, b in zip(edge, expected))

"""Label placement and the drawer (:mod:`dfine.drawing`)."""

from __future__ import annotations

from PIL import Image

from dfine.drawing import PALETTE, _overlap, class_color, draw_detections, place_labels

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

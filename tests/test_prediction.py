"""The shared :class:`dfine.Prediction` type: drawing order."""

from __future__ import annotations

import torch
from PIL import Image

from dfine.prediction import _PALETTE, Prediction


def test_the_most_confident_label_is_drawn_on_top():
    image = Image.new("RGB", (200, 200), (255, 255, 255))
    box = [40.0, 60.0, 160.0, 180.0]
    for scores in ([0.9, 0.1], [0.1, 0.9]):  # input order must not matter
        prediction = Prediction(
            boxes=torch.tensor([box, box]),
            scores=torch.tensor(scores),
            labels=torch.tensor([0, 1]),
            names=["a", "b"],
            image_size=image.size,
            image=image,
        )
        drawn = prediction.draw()
        best = int(torch.tensor(scores).argmax())
        assert drawn.getpixel((41, 58)) == _PALETTE[best]  # inside the label box above the shared box

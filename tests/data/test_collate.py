"""Batch collate: the official scale list, one random size per batch, and its stop epoch."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from torchvision import tv_tensors

from dfine.data.collate import BatchImageCollateFunction, batch_image_collate, generate_scales
from dfine.data.schedule import AugmentationSchedule


def _items(n: int = 2, size: int = 64):
    items = []
    for k in range(n):
        boxes = tv_tensors.BoundingBoxes([[0.5, 0.5, 0.2, 0.4]], format="CXCYWH", canvas_size=(size, size))
        items.append((torch.rand(3, size, size), {"boxes": boxes, "labels": torch.tensor([k])}))
    return items


def test_generate_scales_matches_the_official_list():
    # official dataloader.yml: scales [480 .. 608, 672 .. 800] and 640 three times (generate_scales order)
    assert generate_scales(640, 3) == [480, 512, 544, 576, 608, 640, 640, 640, 800, 768, 736, 704, 672]
    # the official formula, quirks included: for 320 the upper run reaches down to the base itself
    assert generate_scales(320, 1) == [224, 256, 288, 320, 384, 352, 320]


def test_plain_collate_stacks_and_keeps_targets():
    items = _items(3)
    images, targets = batch_image_collate(items)
    assert images.shape == (3, 3, 64, 64) and type(images) is torch.Tensor
    assert [t["labels"].item() for t in targets] == [0, 1, 2]


def test_multiscale_picks_one_size_per_batch_by_interpolation():
    random.seed(0)
    collate = BatchImageCollateFunction(base_size=64, base_size_repeat=3)
    assert collate.scales == generate_scales(64, 3)
    items = _items()
    sizes = set()
    for _ in range(30):
        images, targets = collate(items)
        size = images.shape[-1]
        sizes.add(size)
        assert images.shape[-2] == size and size in collate.scales
        expected = F.interpolate(torch.stack([im for im, _ in items]), size=size)  # official: nearest
        torch.testing.assert_close(images, expected)
        assert targets[0]["boxes"].canvas_size == (size, size)
        torch.testing.assert_close(targets[0]["boxes"].as_subclass(torch.Tensor), torch.tensor([[0.5, 0.5, 0.2, 0.4]]))
    assert len(sizes) > 1


def test_multiscale_stops_at_the_schedule_epoch():
    schedule = AugmentationSchedule(stop_epoch=5, multiscale_stop_epoch=3)
    collate = BatchImageCollateFunction(base_size=640, base_size_repeat=0, schedule=schedule)  # 640 never drawn
    assert collate(_items(1, 64))[0].shape[-1] != 64
    schedule.set_epoch(3)
    assert collate(_items(1, 64))[0].shape[-1] == 64  # off: the batch keeps the pipeline's size
    assert not BatchImageCollateFunction(base_size_repeat=None).multiscale_enabled()


def test_collate_errors_are_explicit():
    collate = BatchImageCollateFunction(base_size=64, base_size_repeat=1)
    mixed = _items(1, 64) + _items(1, 32)
    with pytest.raises(ValueError, match="different shapes"):
        collate(mixed)
    absolute = _items()
    absolute[0][1]["boxes"] = tv_tensors.BoundingBoxes([[10, 10, 30, 30]], format="XYXY", canvas_size=(64, 64))
    with pytest.raises(ValueError, match="normalized boxes"):
        collate(absolute)

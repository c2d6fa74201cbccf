"""Transforms: the official op lists, the few custom ops, Mosaic, and the schedule inside the compose."""

from __future__ import annotations

import random

import pytest
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from dfine.data.coco import CocoDetection
from dfine.data.collate import BatchImageCollateFunction
from dfine.data.schedule import AugmentationSchedule
from dfine.data.transforms import (
    ConvertBoxes,
    ConvertPILImage,
    DetectionCompose,
    Mosaic,
    RandomIoUCrop,
    images_to_device,
    sanitize_boxes,
    train_transforms,
    val_transforms,
)

from .coco_helpers import ann, cats

OFFICIAL_TRAIN_OPS = [
    "RandomPhotometricDistort",
    "RandomZoomOut",
    "RandomIoUCrop",
    "SanitizeBoundingBoxes",
    "RandomHorizontalFlip",
    "Resize",
    "SanitizeBoundingBoxes",
    "ConvertPILImage",
    "ConvertBoxes",
]


def _sample(w: int = 80, h: int = 60) -> tuple[Image.Image, dict]:
    boxes = tv_tensors.BoundingBoxes([[8, 6, 40, 30], [50, 10, 70, 50]], format="XYXY", canvas_size=(h, w))
    target = {
        "boxes": boxes,
        "labels": torch.tensor([0, 1]),
        "area": torch.tensor([768.0, 800.0]),
        "iscrowd": torch.zeros(2, dtype=torch.int64),
        "image_id": torch.tensor(3),
        "orig_size": torch.tensor([w, h]),
    }
    return Image.new("RGB", (w, h), (100, 50, 25)), target


def test_official_train_pipeline_order_and_values():
    pipeline = train_transforms()
    assert pipeline.names == OFFICIAL_TRAIN_OPS
    ops = pipeline.transforms
    assert ops[0].p == 0.5 and ops[1].fill == 0
    assert ops[2].p == 0.8
    assert ops[3].min_size == 1 and ops[6].min_size == 1
    assert ops[5].size == [640, 640]
    assert ops[7].dtype == torch.float32 and ops[7].scale
    assert ops[8].fmt == "CXCYWH" and ops[8].normalize
    assert all(type(op).__module__.startswith("torchvision") for i, op in enumerate(ops) if i not in (2, 7, 8))
    assert train_transforms(mosaic=Mosaic()).names == ["Mosaic", *OFFICIAL_TRAIN_OPS]


def test_val_pipeline_is_resize_then_convert():
    image, target = _sample()
    pipeline = val_transforms()
    assert pipeline.names == ["Resize", "ConvertPILImage"]
    out, out_target = pipeline(image, target)
    assert out.shape == (3, 640, 640) and out.dtype == torch.float32
    torch.testing.assert_close(out[:, 0, 0], torch.tensor([100, 50, 25]) / 255.0)
    assert out_target["boxes"].format == tv_tensors.BoundingBoxFormat.XYXY  # val keeps absolute xyxy


def test_convert_boxes_normalizes_cxcywh_and_stays_a_tv_tensor():
    image, target = _sample(80, 60)
    _, out = ConvertBoxes("cxcywh", normalize=True)(image, target)
    boxes = out["boxes"]
    assert isinstance(boxes, tv_tensors.BoundingBoxes) and boxes.format == tv_tensors.BoundingBoxFormat.CXCYWH
    expected = torch.tensor([[24 / 80, 18 / 60, 32 / 80, 24 / 60], [60 / 80, 30 / 60, 20 / 80, 40 / 60]])
    torch.testing.assert_close(boxes.as_subclass(torch.Tensor), expected)
    assert out["image_id"].item() == 3 and out["orig_size"].tolist() == [80, 60]  # untouched


def test_convert_pil_image_dtype_and_scale():
    image, target = _sample()
    out, _ = ConvertPILImage("float32", scale=True)(image, target)
    assert isinstance(out, tv_tensors.Image) and out.dtype == torch.float32 and out.max() <= 1.0
    out, _ = ConvertPILImage(torch.uint8, scale=False)(image, target)
    assert out.dtype == torch.uint8 and out[0, 0, 0].item() == 100
    with pytest.raises(ValueError, match="not a torch dtype"):
        ConvertPILImage("floaty")


def test_random_iou_crop_probability():
    image, target = _sample()
    out_image, out_target = RandomIoUCrop(p=0.0)(image, target)
    assert out_image is image and out_target is target
    with pytest.raises(ValueError, match="p must be in"):
        RandomIoUCrop(p=1.5)


def test_sanitize_filters_area_and_iscrowd_with_the_boxes():
    image, target = _sample()
    target["boxes"] = tv_tensors.BoundingBoxes(
        [[8, 6, 40, 30], [50, 10, 50.5, 50]], format="XYXY", canvas_size=(60, 80)
    )
    _, out = sanitize_boxes(min_size=1)(image, target)
    assert out["boxes"].shape[0] == 1
    assert out["labels"].tolist() == [0] and out["area"].tolist() == [768.0] and out["iscrowd"].tolist() == [0]


def test_compose_skips_the_ops_the_schedule_switches_off():
    calls: list[str] = []

    class RandomZoomOut:  # named like the official op the policy stops
        def __call__(self, image, target):
            calls.append("zoom")
            return image, target

    schedule = AugmentationSchedule(stop_epoch=2)
    compose = DetectionCompose([RandomZoomOut(), v2.RandomHorizontalFlip(p=0.0)], schedule)
    image, target = _sample()
    compose(image, target)
    schedule.set_epoch(2)
    compose(image, target)
    assert calls == ["zoom"]
    assert compose.active_names() == ["RandomHorizontalFlip"]
    assert compose.active_names(epoch=1) == ["RandomZoomOut", "RandomHorizontalFlip"]


def test_mosaic_tiles_four_images_and_keeps_boxes_aligned(make_coco):
    anns = [ann(k, k, 1, [8, 8, 24, 16]) for k in (1, 2, 3, 4)]
    images = [(k, f"{k}.png", 64, 48) for k in (1, 2, 3, 4)]
    folder, ann_file = make_coco(images, anns, cats((1, "a")))
    mosaic = Mosaic(size=32, degrees=0, translate=(0, 0), scale=(1, 1))
    ds = CocoDetection(folder, ann_file, DetectionCompose([mosaic]))
    torch.manual_seed(0)
    image, target = ds[0]
    assert isinstance(image, tv_tensors.Image) and image.shape == (3, 64, 64)
    boxes = target["boxes"].as_subclass(torch.Tensor)
    assert boxes.shape == (4, 4) and target["labels"].tolist() == [0, 0, 0, 0]
    assert target["area"].shape == (4,) and target["iscrowd"].shape == (4,)
    # each 64x48 image fits a 32x24 cell; its box [8, 8, 32, 24] halves to [4, 4, 16, 12] in the cell
    cells = {(float(b[0]) // 32, float(b[1]) // 32) for b in boxes}
    assert cells == {(0, 0), (1, 0), (0, 1), (1, 1)}
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    torch.testing.assert_close(widths, torch.full((4,), 12.0))
    torch.testing.assert_close(heights, torch.full((4,), 8.0))
    assert target["image_id"].item() == 1


def test_mosaic_needs_the_dataset():
    image, target = _sample()
    with pytest.raises(ValueError, match="needs the dataset"):
        Mosaic()(image, target)


def _pil_scene(seed: int, size: tuple[int, int] = (90, 70)):
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=gen, dtype=torch.uint8)
    image = Image.fromarray(pixels.numpy())
    boxes = tv_tensors.BoundingBoxes([[10, 12, 50, 40], [30, 5, 80, 60]], format="XYXY", canvas_size=(size[1], size[0]))
    return image, {"boxes": boxes, "labels": torch.tensor([1, 2])}


def test_uint8_pipeline_plus_device_conversion_equals_the_float_pipeline():
    """keep_uint8 moves the float conversion to the trainer's device: same random draws, same values."""
    results = []
    for keep_uint8 in (False, True):
        torch.manual_seed(3)
        pipeline = train_transforms((64, 64), keep_uint8=keep_uint8)
        collate = BatchImageCollateFunction(base_size=64, base_size_repeat=3)
        random.seed(5)
        batch = collate([pipeline(*_pil_scene(seed)) for seed in range(4)])
        results.append(batch)
    (float_images, float_targets), (uint8_images, uint8_targets) = results
    assert float_images.dtype == torch.float32 and uint8_images.dtype == torch.uint8
    assert uint8_images.element_size() * 4 == float_images.element_size()
    converted = images_to_device(uint8_images, torch.device("cpu"), torch.channels_last)
    assert converted.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(converted, float_images)
    for a, b in zip(float_targets, uint8_targets):
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["labels"], b["labels"])


def test_uint8_batch_before_a_bilinear_resize_is_converted_first():
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    items = [
        (img, {"boxes": tv_tensors.BoundingBoxes([[0.5, 0.5, 0.2, 0.2]], format="CXCYWH", canvas_size=(32, 32))})
        for img in images
    ]
    random.seed(0)
    got, _ = BatchImageCollateFunction(base_size=32, base_size_repeat=1, mode="bilinear")(items)
    random.seed(0)
    size = random.choice(BatchImageCollateFunction(base_size=32, base_size_repeat=1).scales)
    expected = torch.nn.functional.interpolate(images.float() / 255, size=size, mode="bilinear")
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_keep_uint8_only_defers_the_official_conversion():
    image = Image.new("RGB", (8, 8), (255, 0, 10))
    assert ConvertPILImage("float32", scale=True, keep_uint8=True)(image).dtype == torch.uint8
    assert ConvertPILImage("float16", scale=True, keep_uint8=True)(image).dtype == torch.float16
    assert ConvertPILImage("float32", scale=False, keep_uint8=True)(image).max() == 255.0
    float_batch = torch.rand(1, 3, 4, 4)
    assert images_to_device(float_batch, torch.device("cpu")) is float_batch

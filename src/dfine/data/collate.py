"""Batching, with the official multi-scale resize.

``BatchImageCollateFunction`` stacks images ``[B, 3, H, W]`` and keeps targets as a list. While the
schedule says multi-scale is on, each batch is resized with ``F.interpolate`` (default mode
``"nearest"``, as the official code) to one size drawn at random from :func:`generate_scales`:
``base*0.75 .. base*1.25`` in steps of 32 with ``base`` repeated ``base_size_repeat`` times
(640, 3 -> 480..608, 640 x3, 672..800). Boxes are normalized by then, so they need no change.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

if TYPE_CHECKING:
    from .schedule import AugmentationSchedule

__all__ = ["BatchImageCollateFunction", "batch_image_collate", "generate_scales"]

SCALE_STEP = 32  # the network's largest stride: every size stays a multiple of it
BASE_SIZE = 640
BASE_SIZE_REPEAT = 3  # official configs: base size drawn 3x as often as any other


def generate_scales(base_size: int = BASE_SIZE, base_size_repeat: int = BASE_SIZE_REPEAT) -> list[int]:
    """Multi-scale sizes: ``[0.75 base .. base)`` and ``(base .. 1.25 base]`` in steps of 32, base repeated.

    Same list and order as the official ``generate_scales``: the lower sizes ascending, ``base``
    ``base_size_repeat`` times, the upper sizes descending.
    """
    low = int(base_size * 0.75 / SCALE_STEP) * SCALE_STEP
    high = int(base_size * 1.25 / SCALE_STEP) * SCALE_STEP
    count = (base_size - low) // SCALE_STEP
    return (
        [low + i * SCALE_STEP for i in range(count)]
        + [base_size] * base_size_repeat
        + [high - i * SCALE_STEP for i in range(count)]
    )


def _stack(items: Sequence[tuple[torch.Tensor, dict[str, Any]]]) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    sizes = {tuple(image.shape) for image, _ in items}
    if len(sizes) > 1:
        raise ValueError(
            f"images in one batch have different shapes {sorted(sizes)}; the pipeline must end with a "
            "fixed-size Resize (e.g. Resize([640, 640])) and ConvertPILImage"
        )
    images = torch.stack([image.as_subclass(torch.Tensor) for image, _ in items])
    return images, [target for _, target in items]


def _require_normalized(targets: Sequence[dict[str, Any]]) -> None:
    for target in targets:
        boxes = target.get("boxes")
        if boxes is not None and boxes.numel() and boxes.max() > 1.0 + 1e-3:
            raise ValueError(
                "multi-scale collate needs normalized boxes, found values up to "
                f"{boxes.max().item():.1f}; end the pipeline with ConvertBoxes(fmt='cxcywh', normalize=True) "
                "or set base_size_repeat=None"
            )


def batch_image_collate(
    items: Sequence[tuple[torch.Tensor, dict[str, Any]]],
) -> tuple[torch.Tensor, list[dict]]:
    """Stack images into ``[B, 3, H, W]``; targets stay a list of dicts."""
    return _stack(items)


class BatchImageCollateFunction:
    """Collate with a random per-batch size while the schedule allows it.

    Args:
        base_size: the training size (multi-scale centre).
        base_size_repeat: how often ``base_size`` appears among the scales; None turns multi-scale off.
        schedule: says whether multi-scale is on at the current epoch; None keeps it on.
        mode: ``F.interpolate`` mode (official: ``"nearest"``).
    """

    def __init__(
        self,
        base_size: int = BASE_SIZE,
        base_size_repeat: int | None = BASE_SIZE_REPEAT,
        schedule: AugmentationSchedule | None = None,
        mode: str = "nearest",
    ) -> None:
        self.base_size = base_size
        self.scales = generate_scales(base_size, base_size_repeat) if base_size_repeat is not None else None
        self.schedule = schedule
        self.mode = mode

    def multiscale_enabled(self) -> bool:
        return self.scales is not None and (self.schedule is None or self.schedule.multiscale_enabled())

    def __call__(self, items: Sequence[tuple[torch.Tensor, dict[str, Any]]]) -> tuple[torch.Tensor, list[dict]]:
        images, targets = _stack(items)
        if not self.multiscale_enabled():
            return images, targets
        _require_normalized(targets)
        size = random.choice(self.scales)
        if images.dtype == torch.uint8 and self.mode != "nearest":
            # nearest only picks pixels, so uint8 gives the float result; other modes must see floats
            images = TF.to_dtype(images, dtype=torch.float32, scale=True)
        images = F.interpolate(images, size=size, mode=self.mode)
        for target in targets:  # boxes are normalized; only the recorded canvas changes
            boxes = target.get("boxes")
            if isinstance(boxes, tv_tensors.BoundingBoxes):
                target["boxes"] = tv_tensors.wrap(boxes, like=boxes, canvas_size=(size, size))
        return images, targets

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_size={self.base_size}, scales={self.scales}, mode={self.mode!r})"

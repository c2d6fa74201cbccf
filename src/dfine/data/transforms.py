"""Detection pipelines from ``torchvision.transforms.v2``, plus the few ops it does not have.

The official D-FINE train pipeline (``configs/dfine/include/dataloader.yml``), in order::

    RandomPhotometricDistort(p=0.5), RandomZoomOut(fill=0), RandomIoUCrop(p=0.8),
    SanitizeBoundingBoxes(min_size=1), RandomHorizontalFlip(), Resize([640, 640]),
    SanitizeBoundingBoxes(min_size=1), ConvertPILImage(float32, scale=True),
    ConvertBoxes("cxcywh", normalize=True)

and the val pipeline ``Resize([640, 640]), ConvertPILImage(float32, scale=True)``. Every op except the
three defined here is torchvision's own. :class:`DetectionCompose` runs a list of ops and asks an
:class:`~dfine.data.schedule.AugmentationSchedule` which are switched off at the current epoch (ops are
named by their class name, as the official ``stop_epoch`` policy does).

Defined here, each because v2 lacks it:

* :class:`RandomIoUCrop` - v2's ``RandomIoUCrop`` applied with probability ``p``.
* :class:`ConvertPILImage` - image to a ``dtype`` tensor, optionally scaled (``ToImage`` + ``ToDtype``).
* :class:`ConvertBoxes` - box format conversion plus normalization by the image size.
* :class:`Mosaic` - four images on a 2x2 canvas, then a random affine; needs the dataset.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import PIL.Image
import torch
from torch import nn
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

if TYPE_CHECKING:
    from .schedule import AugmentationSchedule

__all__ = [
    "ConvertBoxes",
    "ConvertPILImage",
    "DetectionCompose",
    "Mosaic",
    "RandomIoUCrop",
    "images_to_device",
    "op_name",
    "sanitize_boxes",
    "train_transforms",
    "val_transforms",
]

# Official values (configs/dfine/include/dataloader.yml).
TRAIN_SIZE = (640, 640)
PHOTOMETRIC_P = 0.5
ZOOM_OUT_FILL = 0
IOU_CROP_P = 0.8
SANITIZE_MIN_SIZE = 1
# Mosaic defaults: per-image size and the affine of the official RT-DETR/D-FINE Mosaic op.
MOSAIC_SIZE = 320
MOSAIC_FILL = 114
MOSAIC_TRANSLATE = (0.1, 0.1)
MOSAIC_SCALE = (0.5, 1.5)

# Per-box target entries that must be filtered together with the boxes.
_PER_BOX_KEYS = ("labels", "area", "iscrowd")


def op_name(op: Callable[..., Any]) -> str:
    """The name a schedule uses for ``op``: its class name (as the official ``stop_epoch`` policy)."""
    return type(op).__name__


def per_box_entries(inputs: Any) -> tuple[torch.Tensor, ...]:
    """``labels_getter`` for ``v2.SanitizeBoundingBoxes``: every per-box entry of the target dict, so
    ``area`` and ``iscrowd`` are filtered with the boxes (v2's default filters ``labels`` only)."""
    target = inputs[1] if isinstance(inputs, (tuple, list)) and len(inputs) > 1 else inputs
    if not isinstance(target, dict):
        raise TypeError("SanitizeBoundingBoxes expects (image, target dict) samples")
    return tuple(target[k] for k in _PER_BOX_KEYS if k in target)


def sanitize_boxes(min_size: float = SANITIZE_MIN_SIZE) -> v2.SanitizeBoundingBoxes:
    """v2's ``SanitizeBoundingBoxes`` that also filters ``area`` and ``iscrowd``."""
    return v2.SanitizeBoundingBoxes(min_size=min_size, labels_getter=per_box_entries)


class RandomIoUCrop(v2.RandomIoUCrop):
    """v2's ``RandomIoUCrop`` (SSD crop), applied with probability ``p`` (the official op's extra).

    Args:
        p: probability of cropping; otherwise the sample passes unchanged.
        **kwargs: passed to ``v2.RandomIoUCrop`` (``min_scale``, ``max_scale``, ``trials``, ...).
    """

    def __init__(self, p: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomIoUCrop: p must be in [0, 1], got {p}")
        self.p = p

    def forward(self, *inputs: Any) -> Any:
        if torch.rand(1).item() >= self.p:
            return inputs if len(inputs) > 1 else inputs[0]
        return super().forward(*inputs)


class ConvertPILImage(v2.Transform):
    """Image (PIL or ``tv_tensors.Image``) to a ``tv_tensors.Image`` of ``dtype``.

    Args:
        dtype: ``"float32"`` (official) or any ``torch`` dtype (name or object).
        scale: scale values to the dtype's range (uint8 0..255 -> float 0..1).
        keep_uint8: leave a uint8 image uint8 when the conversion is the official one (float, scaled):
            the trainer finishes it on the model's device (:func:`images_to_device`), with the same
            values, after a 4x smaller collate and host-to-device copy.
    """

    _transformed_types = (PIL.Image.Image, tv_tensors.Image)

    def __init__(self, dtype: str | torch.dtype = "float32", scale: bool = True, keep_uint8: bool = False) -> None:
        super().__init__()
        self.dtype = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
        if not isinstance(self.dtype, torch.dtype):
            raise ValueError(f"ConvertPILImage: dtype {dtype!r} is not a torch dtype; use e.g. 'float32'")
        self.scale = scale
        self.keep_uint8 = keep_uint8 and self.dtype == torch.float32 and scale

    def transform(self, inpt: Any, params: dict[str, Any]) -> tv_tensors.Image:
        image = F.to_image(inpt)
        if self.keep_uint8 and image.dtype == torch.uint8:
            return image
        return F.to_dtype(image, dtype=self.dtype, scale=self.scale)


def images_to_device(
    images: torch.Tensor, device: torch.device, memory_format: torch.memory_format = torch.preserve_format
) -> torch.Tensor:
    """A batch ``[B, 3, H, W]`` on ``device`` as the model takes it: float32 in [0, 1].

    A uint8 batch (from ``ConvertPILImage(keep_uint8=True)``) is converted there, exactly as
    ``ConvertPILImage(float32, scale=True)`` would have on the host; a float batch only moves.
    """
    images = images.to(device, non_blocking=True)
    if images.dtype == torch.uint8:
        images = F.to_dtype(images, dtype=torch.float32, scale=True)
    return images.contiguous(memory_format=memory_format) if memory_format != torch.preserve_format else images


class ConvertBoxes(v2.Transform):
    """Boxes to format ``fmt``, optionally divided by the image size.

    The result stays a ``tv_tensors.BoundingBoxes`` (format ``fmt``, ``canvas_size`` of the image), so a
    later resize of the batch (multi-scale collate) leaves normalized boxes valid.

    Args:
        fmt: ``"cxcywh"``, ``"xyxy"`` or ``"xywh"`` (any case); empty to keep the format.
        normalize: divide x by the width and y by the height.
    """

    _transformed_types = (tv_tensors.BoundingBoxes,)

    def __init__(self, fmt: str = "cxcywh", normalize: bool = True) -> None:
        super().__init__()
        self.fmt = fmt.upper()
        self.normalize = normalize

    def transform(self, inpt: tv_tensors.BoundingBoxes, params: dict[str, Any]) -> tv_tensors.BoundingBoxes:
        boxes = F.convert_bounding_box_format(inpt, new_format=self.fmt) if self.fmt else inpt
        if not self.normalize:
            return boxes
        h, w = boxes.canvas_size
        scale = torch.tensor([w, h, w, h], dtype=boxes.dtype, device=boxes.device)
        return tv_tensors.wrap(boxes.as_subclass(torch.Tensor) / scale, like=boxes)


class Mosaic(nn.Module):
    """Four images tiled 2x2 around the canvas centre, then a random affine (the official Mosaic idea).

    The sample's own image and three random others from the dataset are each resized to fit a
    ``size x size`` cell; the ``2*size`` canvas is then moved by ``v2.RandomAffine``. Boxes follow;
    a ``SanitizeBoundingBoxes`` later in the pipeline removes what the affine pushed out.

    Args:
        size: cell size in pixels (canvas is ``2 * size``).
        p: probability of applying; otherwise the sample passes unchanged.
        degrees, translate, scale: ``v2.RandomAffine`` ranges.
        fill: canvas and affine fill value.
    """

    def __init__(
        self,
        size: int = MOSAIC_SIZE,
        p: float = 1.0,
        degrees: float = 0.0,
        translate: tuple[float, float] = MOSAIC_TRANSLATE,
        scale: tuple[float, float] = MOSAIC_SCALE,
        fill: int = MOSAIC_FILL,
    ) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Mosaic: p must be in [0, 1], got {p}")
        self.size, self.p, self.fill = size, p, fill
        self.fit = v2.Resize(size=None, max_size=size)  # longer side == size
        self.affine = v2.RandomAffine(degrees=degrees, translate=translate, scale=scale, fill=fill)

    def forward(self, image: Any, target: dict[str, Any], dataset: Any = None) -> tuple[Any, dict[str, Any]]:
        if dataset is None or not hasattr(dataset, "load_item"):
            raise ValueError(
                "Mosaic needs the dataset to draw three more images: use it inside DetectionCompose "
                "as the dataset's transforms (CocoDetection passes itself)"
            )
        if torch.rand(1).item() >= self.p:
            return image, target
        samples = [(image, target)] + [dataset.load_item(random.randrange(len(dataset))) for _ in range(3)]
        s = self.size
        canvas = torch.full((3, 2 * s, 2 * s), self.fill, dtype=torch.uint8)
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("boxes", *_PER_BOX_KEYS)}
        for quadrant, (img, tgt) in enumerate(samples):
            img, tgt = self.fit(F.to_image(img), tgt)
            h, w = img.shape[-2:]
            # cells meet at the canvas centre: top-left image sits right/bottom-aligned, and so on
            x0 = s - w if quadrant % 2 == 0 else s
            y0 = s - h if quadrant < 2 else s
            canvas[:, y0 : y0 + h, x0 : x0 + w] = img
            shift = torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
            parts["boxes"].append(F.convert_bounding_box_format(tgt["boxes"], new_format="XYXY").float() + shift)
            for k in _PER_BOX_KEYS:
                parts[k].append(tgt[k])
        out = dict(target)
        out["boxes"] = tv_tensors.BoundingBoxes(torch.cat(parts["boxes"]), format="XYXY", canvas_size=(2 * s, 2 * s))
        out.update({k: torch.cat(parts[k]) for k in _PER_BOX_KEYS})
        return self.affine(tv_tensors.Image(canvas), out)


class DetectionCompose:
    """Run detection ops in order; ops the schedule switches off at the current epoch are skipped.

    Args:
        transforms: ops taking and returning ``(image, target)``; a :class:`Mosaic` also receives the
            dataset.
        schedule: answers "is this op on now"; None keeps every op on.
    """

    def __init__(self, transforms: Sequence[Callable[..., Any]], schedule: AugmentationSchedule | None = None):
        self.transforms = list(transforms)
        self.schedule = schedule

    @property
    def names(self) -> list[str]:
        return [op_name(op) for op in self.transforms]

    def active_names(self, epoch: int | None = None) -> list[str]:
        """Names of the ops that run at ``epoch`` (default: the schedule's current epoch)."""
        if self.schedule is None:
            return self.names
        return [n for n in self.names if self.schedule.op_enabled(n, epoch)]

    def __call__(self, image: Any, target: dict[str, Any], dataset: Any = None) -> tuple[Any, dict[str, Any]]:
        for op in self.transforms:
            if self.schedule is not None and not self.schedule.op_enabled(op_name(op)):
                continue
            image, target = op(image, target, dataset) if isinstance(op, Mosaic) else op(image, target)
        return image, target

    def __repr__(self) -> str:
        ops = "".join(f"\n    {op!r}," for op in self.transforms)
        return f"{type(self).__name__}([{ops}\n], schedule={self.schedule!r})"


def train_transforms(
    size: tuple[int, int] = TRAIN_SIZE,
    schedule: AugmentationSchedule | None = None,
    mosaic: Mosaic | None = None,
    keep_uint8: bool = False,
) -> DetectionCompose:
    """The official training pipeline (module docstring), optionally starting with ``mosaic``.

    Args:
        size: output (height, width).
        schedule: which ops are off at which epoch (official: the first three from ``stop_epoch``).
        mosaic: a :class:`Mosaic` op to run first (add ``"Mosaic"`` to the schedule's ``ops_off`` to
            stop it with the others).
        keep_uint8: images stay uint8 (see :class:`ConvertPILImage`).
    """
    ops: list[Callable[..., Any]] = [] if mosaic is None else [mosaic]
    ops += [
        v2.RandomPhotometricDistort(p=PHOTOMETRIC_P),
        v2.RandomZoomOut(fill=ZOOM_OUT_FILL),
        RandomIoUCrop(p=IOU_CROP_P),
        sanitize_boxes(),
        v2.RandomHorizontalFlip(),
        v2.Resize(size=list(size)),
        sanitize_boxes(),
        ConvertPILImage(dtype="float32", scale=True, keep_uint8=keep_uint8),
        ConvertBoxes(fmt="cxcywh", normalize=True),
    ]
    return DetectionCompose(ops, schedule)


def val_transforms(size: tuple[int, int] = TRAIN_SIZE, keep_uint8: bool = False) -> DetectionCompose:
    """The official evaluation pipeline: resize, then float image in [0, 1]; boxes stay absolute xyxy.

    ``keep_uint8``: images stay uint8 (see :class:`ConvertPILImage`)."""
    return DetectionCompose(
        [v2.Resize(size=list(size)), ConvertPILImage(dtype="float32", scale=True, keep_uint8=keep_uint8)]
    )

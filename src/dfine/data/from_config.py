"""Build the data pipeline from the official YAML ``transforms.ops`` lists (a plain name table)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torchvision.transforms import v2

from .schedule import OFFICIAL_STOP_OPS, AugmentationSchedule
from .transforms import ConvertBoxes, ConvertPILImage, DetectionCompose, Mosaic, RandomIoUCrop, sanitize_boxes

__all__ = ["TRANSFORM_OPS", "build_pipeline", "build_schedule"]

# YAML ``type`` -> constructor taking the remaining keys of the op.
TRANSFORM_OPS: dict[str, Callable[..., Any]] = {
    "RandomPhotometricDistort": v2.RandomPhotometricDistort,
    "RandomZoomOut": v2.RandomZoomOut,
    "RandomIoUCrop": RandomIoUCrop,
    "SanitizeBoundingBoxes": lambda min_size=1, **kw: sanitize_boxes(min_size=min_size, **kw),
    "RandomHorizontalFlip": v2.RandomHorizontalFlip,
    "Resize": v2.Resize,
    "ConvertPILImage": ConvertPILImage,
    "ConvertBoxes": ConvertBoxes,
    "Mosaic": Mosaic,
}


def build_schedule(policy: dict[str, Any] | None, multiscale_stop_epoch: int | None) -> AugmentationSchedule:
    """The augmentation schedule from ``transforms.policy`` (``name: stop_epoch``, ``epoch``, ``ops``)."""
    if not policy:
        return AugmentationSchedule(None, OFFICIAL_STOP_OPS, multiscale_stop_epoch)
    name = policy.get("name", "stop_epoch")
    if name != "stop_epoch":
        raise ValueError(f"transforms.policy.name {name!r} is not supported; use stop_epoch")
    return AugmentationSchedule(policy.get("epoch"), tuple(policy.get("ops", OFFICIAL_STOP_OPS)), multiscale_stop_epoch)


def build_pipeline(
    ops: list[dict[str, Any]] | tuple, schedule: AugmentationSchedule | None, where: str, keep_uint8: bool = False
) -> DetectionCompose:
    """A :class:`DetectionCompose` from YAML op entries; an unknown op names the closest known one.

    ``keep_uint8``: ``ConvertPILImage`` leaves images uint8 for the trainer to convert on its device.
    """
    built = []
    for i, spec in enumerate(ops):
        if not isinstance(spec, dict) or "type" not in spec:
            raise ValueError(f"{where}.ops[{i}] must be a mapping with a 'type', got {spec!r}")
        kind = spec["type"]
        if kind not in TRANSFORM_OPS:
            import difflib

            match = difflib.get_close_matches(kind, TRANSFORM_OPS, n=1)
            hint = f"; did you mean {match[0]!r}?" if match else f"; known ops: {', '.join(TRANSFORM_OPS)}"
            raise ValueError(f"{where}.ops[{i}].type {kind!r} is not a known transform{hint}")
        args = {k: v for k, v in spec.items() if k != "type"}
        if kind == "ConvertPILImage" and keep_uint8:
            args["keep_uint8"] = True
        try:
            built.append(TRANSFORM_OPS[kind](**args))
        except TypeError as err:
            raise ValueError(f"{where}.ops[{i}] ({kind}): bad arguments {args}: {err}") from None
    return DetectionCompose(built, schedule)

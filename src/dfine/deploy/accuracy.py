"""COCO AP of an exported model on a validation set, and the INT8 accuracy check built on it.

``dfine export --int8 --check`` scores the fp32 IR and the INT8 IR on the same images with the same
pre-processing (:func:`dfine.deploy.runtime.preprocess`, the squash resize of ``dfine predict``) and
the training's evaluator (:class:`dfine.engine.evaluate.CocoEvaluator`, all K detections per image),
so the difference is the quantization's alone. The fp32 IR stands in for PyTorch: ``--check`` has
already held it to PyTorch's detections within 1e-4 in score.

AP here is in points (0-100), as the issue tables and ``--max-ap-drop`` use it.
"""

from __future__ import annotations

import gc
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.coco import CocoDetection
from ..data.layout import find_dataset
from ..engine.evaluate import CocoEvaluator, EvalResult
from .backend import Backend
from .runtime import preprocess

__all__ = [
    "DEFAULT_MAX_AP_DROP",
    "AccuracyCheck",
    "AccuracyDropError",
    "check_accuracy",
    "evaluate_backend",
    "require_ap_drop",
]

DEFAULT_MAX_AP_DROP = 1.0  # AP points an INT8 model may lose (issue 12's target)
_BATCH = 8  # images per backend call


class AccuracyDropError(ValueError):
    """A quantized model that loses more AP than allowed."""


def require_ap_drop(max_ap_drop: float) -> None:
    """Refuse a negative ``max_ap_drop`` (the AP points INT8 may lose)."""
    if max_ap_drop < 0:
        raise ValueError(f"max_ap_drop is the AP points INT8 may lose, at least 0; got {max_ap_drop}")


def _scores(model: Backend | Callable[[], Backend], dataset: CocoDetection, max_images: int | None) -> dict:
    """COCO stats of ``model`` on ``dataset``; a model given as an opener is released afterwards."""
    if isinstance(model, Backend):
        return evaluate_backend(model, dataset, max_images=max_images).stats
    backend = model()
    try:
        return evaluate_backend(backend, dataset, max_images=max_images).stats
    finally:
        del backend
        gc.collect()  # the runtime frees its compiled model now, not at some later collection


def validation_set(data: str | Path, split: str = "val") -> CocoDetection:
    """The ``split`` of a dataset (folder, YOLO data YAML or COCO json), as :meth:`dfine.DFINE.val` finds it."""
    splits = find_dataset(data, None if split == "val" else split)
    layout = splits.val
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # repaired annotations: scored as the training's evaluator scores them
        return CocoDetection(layout.img_folder, layout.annotations, prior_issues=layout.issues)


def _label_to_category(dataset: CocoDetection, class_names: Sequence[str], source: str) -> list[int]:
    """The dataset's category id of each model label, matched by class name."""
    by_name = dict(zip(dataset.class_names, dataset.category_ids))
    if sorted(by_name) != sorted(class_names):
        raise ValueError(
            f"{source}: its classes ({', '.join(dataset.class_names[:5])}...) are not the model's "
            f"({', '.join(list(class_names)[:5])}...); score the model on data with its classes"
        )
    return [by_name[name] for name in class_names]


def _run_padded(backend: Backend, images: list, image_size: int) -> tuple[torch.Tensor, ...]:
    """The backend on a batch; a static-batch model gets the last image repeated up to its batch size."""
    fixed = backend.fixed_batch
    padded = images + [images[-1]] * (fixed - len(images)) if fixed else images
    return tuple(out[: len(images)] for out in backend(*preprocess(padded, image_size)))


def evaluate_backend(backend: Backend, dataset: CocoDetection, *, max_images: int | None = None) -> EvalResult:
    """COCO metrics of ``backend`` on ``dataset`` (every detection the model returns, no score threshold).

    Args:
        backend: the model (any runtime); its class names must be the dataset's.
        dataset: the validation images and ground truth (:func:`validation_set`).
        max_images: score only the first this many images (None: all).
    """
    count = len(dataset) if max_images is None else min(max_images, len(dataset))
    categories = _label_to_category(dataset, backend.metadata.class_names, dataset.source)
    ground_truth = dataset.coco_gt_dict()
    kept = set(dataset.image_ids[:count])
    ground_truth["images"] = [image for image in ground_truth["images"] if image["id"] in kept]
    ground_truth["annotations"] = [ann for ann in ground_truth["annotations"] if ann["image_id"] in kept]
    evaluator = CocoEvaluator(ground_truth, categories, list(backend.metadata.class_names))
    batch = backend.fixed_batch or _BATCH
    for start in range(0, count, batch):
        indices = range(start, min(start + batch, count))
        images = [dataset.load_item(i)[0] for i in indices]
        labels, boxes, scores = _run_padded(backend, images, backend.image_size)
        results = [{"labels": l, "boxes": b, "scores": s} for l, b, s in zip(labels, boxes, scores)]
        evaluator.update([dataset.image_ids[i] for i in indices], results)
    return evaluator.compute(verbose=False)


@dataclass(frozen=True)
class AccuracyCheck:
    """AP of a reference model and a quantized one on the same images.

    Attributes:
        reference_ap, quantized_ap: COCO AP@[.5:.95] in points (0-100).
        reference_ap50, quantized_ap50: AP@.5 in points.
        images: validation images scored.
        max_drop: the largest drop allowed, in points.
    """

    reference_ap: float
    quantized_ap: float
    reference_ap50: float
    quantized_ap50: float
    images: int
    max_drop: float

    @property
    def drop(self) -> float:
        """AP points lost by quantization (negative: gained)."""
        return self.reference_ap - self.quantized_ap

    @property
    def passed(self) -> bool:
        return self.drop <= self.max_drop

    def describe(self) -> str:
        return (
            f"AP fp32 {self.reference_ap:.1f}, INT8 {self.quantized_ap:.1f} (drop {self.drop:.2f} points, allowed "
            f"{self.max_drop:g}); AP50 {self.reference_ap50:.1f} -> {self.quantized_ap50:.1f}; {self.images} images"
        )


def check_accuracy(
    reference: Backend | Callable[[], Backend],
    quantized: Backend | Callable[[], Backend],
    dataset: CocoDetection,
    *,
    max_ap_drop: float = DEFAULT_MAX_AP_DROP,
    max_images: int | None = None,
) -> AccuracyCheck:
    """Score both models on ``dataset``; the result says whether the drop is within ``max_ap_drop``.

    Each model is a backend, or a function that opens one: it is then opened when its turn comes and
    released before the other is opened. Pass functions for OpenVINO models: an fp32 and an INT8 model
    compiled side by side in one process were seen to corrupt its heap (a crash minutes later).
    It does not raise on a large drop (the caller decides what happens to the file); see
    :class:`AccuracyDropError` for the error the export raises.
    """
    require_ap_drop(max_ap_drop)
    before = _scores(reference, dataset, max_images)
    after = _scores(quantized, dataset, max_images)
    images = len(dataset) if max_images is None else min(max_images, len(dataset))
    return AccuracyCheck(
        100 * before["AP"], 100 * after["AP"], 100 * before["AP50"], 100 * after["AP50"], images, max_ap_drop
    )

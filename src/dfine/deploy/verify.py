"""``--check``: run an exported model next to PyTorch on real images and compare the detections.

The default check images are two generated scenes (coloured shapes on textured backgrounds, from
:mod:`dfine.data.synthetic`) of different sizes, so that the batch and ``orig_target_sizes`` both
matter; pass image files to check on photos. Tolerances allow fp32 kernel differences between
runtimes (sorted scores ~1e-5, boxes ~5e-6 of the image side measured for N), not real errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.images import load_image
from ..data.synthetic import SynthConfig, render_image
from .backend import Backend
from .compare import DetectionDiff, compare_detections
from .runtime import preprocess

__all__ = ["BOX_TOL_FRACTION", "SCORE_TOL", "ExportCheckError", "check_images", "verify_backend"]

SCORE_TOL = 1e-4  # sorted scores; measured N: 4e-6 (onnxruntime and OpenVINO vs torch)
BOX_TOL_FRACTION = 1e-4  # of the larger image side, 0.064 px at 640; measured N: ~5e-6 of the side
_CHECK_SIZES = ((640, 480), (480, 640))  # (width, height) of the generated check scenes
_CHECK_SEED = 0


class ExportCheckError(ValueError):
    """An exported model whose detections differ from PyTorch's beyond tolerance."""


def check_images(paths: Sequence[str | Path] | None = None) -> list[Image.Image]:
    """The images ``--check`` runs: the given files, or two generated scenes (module docstring)."""
    if paths:
        return [load_image(path) for path in paths]
    images = []
    for index, size in enumerate(_CHECK_SIZES):
        rng = np.random.default_rng((_CHECK_SEED, index))
        scene, _ = render_image(rng, SynthConfig(image_size=max(size), max_objects=8), empty=False)
        images.append(scene.resize(size, Image.Resampling.BILINEAR))
    return images


def verify_backend(
    backend: Backend,
    reference: Backend,
    images: Sequence[Image.Image],
    *,
    score_tol: float = SCORE_TOL,
    box_tol_fraction: float = BOX_TOL_FRACTION,
) -> DetectionDiff:
    """Compare ``backend`` with ``reference`` (PyTorch) on ``images``, as one batch.

    Raises:
        ExportCheckError: unpaired detections, or differences above tolerance.
    """
    inputs = preprocess(list(images), reference.image_size)
    if backend.fixed_batch is not None:  # a static export: compare on its batch size
        count = backend.fixed_batch
        inputs = tuple(t.repeat(-(-count // len(t)), *[1] * (t.ndim - 1))[:count] for t in inputs)
    diff = compare_detections(reference(*inputs), backend(*inputs), score_tol)
    box_tol = box_tol_fraction * max(max(image.size) for image in images)
    if not diff.within(score_tol, box_tol):
        raise ExportCheckError(
            f"{backend.name} disagrees with PyTorch: {diff.describe()} (tolerance: scores {score_tol:g}, "
            f"boxes {box_tol:.3g} px); the exported file is not reliable"
        )
    return diff

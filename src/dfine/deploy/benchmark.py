"""Latency of a backend: medians of wall-clock runs after warm-up (what the benchmarks report)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .backend import Backend

__all__ = ["Latency", "time_backend"]


@dataclass(frozen=True)
class Latency:
    """Milliseconds per call.

    Attributes:
        median, mean, p90, minimum: over ``runs`` timed calls.
        runs: timed calls.
        batch_size: images per call.
    """

    median: float
    mean: float
    p90: float
    minimum: float
    runs: int
    batch_size: int

    @property
    def images_per_second(self) -> float:
        return 1e3 * self.batch_size / self.median


def time_backend(
    backend: Backend, batches: Sequence[tuple[torch.Tensor, torch.Tensor]], *, warmup: int = 3, runs: int | None = None
) -> Latency:
    """Time ``backend`` on prepared ``(images, orig_target_sizes)`` batches, cycling through them.

    Each call returns host tensors, so GPU backends are synchronized and their copies included.

    Args:
        backend: the model.
        batches: inputs, all of one batch size; each call takes the next one.
        warmup: untimed calls first (kernel selection, caches, lazy allocation).
        runs: timed calls (default: one per batch).
    """
    if not batches:
        raise ValueError("no input batches to time")
    runs = runs or len(batches)
    for index in range(warmup):
        backend(*batches[index % len(batches)])
    times = []
    for index in range(runs):
        images, sizes = batches[index % len(batches)]
        start = time.perf_counter()
        backend(images, sizes)
        times.append((time.perf_counter() - start) * 1e3)
    ordered = sorted(times)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return Latency(statistics.median(ordered), statistics.fmean(ordered), p90, ordered[0], runs, len(batches[0][0]))

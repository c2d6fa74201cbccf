"""What is on at epoch e: the one place the trainer, the dataset transforms and the collate ask.

Official D-FINE behaviour (``dataloader.yml``): the ops ``RandomPhotometricDistort``,
``RandomZoomOut`` and ``RandomIoUCrop`` run while ``epoch < stop_epoch`` (the ``stop_epoch`` policy of
``Compose``), and the multi-scale collate runs while ``epoch < stop_epoch`` of the collate function
(the same number in every official config, e.g. 72 for D-FINE-L).

The current epoch lives in a shared-memory tensor, so DataLoader worker processes (forked or spawned,
persistent or not) see :meth:`AugmentationSchedule.set_epoch` as soon as the main process calls it.
Call it before iterating the loader for that epoch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

__all__ = ["OFFICIAL_STOP_OPS", "AugmentationSchedule", "EpochPlan"]

OFFICIAL_STOP_OPS: tuple[str, ...] = ("RandomPhotometricDistort", "RandomZoomOut", "RandomIoUCrop")


@dataclass(frozen=True)
class EpochPlan:
    """The answer for one epoch.

    Attributes:
        epoch: the epoch asked about.
        ops_off: names of the transform ops switched off.
        multiscale: whether the collate picks a random size per batch.
    """

    epoch: int
    ops_off: frozenset[str]
    multiscale: bool


class AugmentationSchedule:
    """Which augmentations are on at an epoch.

    Args:
        stop_epoch: from this epoch on, the ops in ``ops_off`` are skipped; None never stops them.
        ops_off: op names (class names, e.g. ``"RandomIoUCrop"``, ``"Mosaic"``) stopped at
            ``stop_epoch``.
        multiscale_stop_epoch: from this epoch on, the collate keeps the base size; None means the same
            epoch as ``stop_epoch`` (as in every official config).
    """

    def __init__(
        self,
        stop_epoch: int | None = None,
        ops_off: Iterable[str] = OFFICIAL_STOP_OPS,
        multiscale_stop_epoch: int | None = None,
    ) -> None:
        for name, value in (("stop_epoch", stop_epoch), ("multiscale_stop_epoch", multiscale_stop_epoch)):
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"AugmentationSchedule: {name} must be a non-negative int or None, got {value!r}")
        if isinstance(ops_off, str):
            raise TypeError(f"AugmentationSchedule: ops_off must be a list of op names, not the string {ops_off!r}")
        self.stop_epoch = stop_epoch
        self.ops_off = frozenset(ops_off)
        self.multiscale_stop_epoch = stop_epoch if multiscale_stop_epoch is None else multiscale_stop_epoch
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        """The current epoch (0 until :meth:`set_epoch` is called)."""
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        """Make ``epoch`` current, in this process and in every DataLoader worker."""
        if epoch < 0:
            raise ValueError(f"AugmentationSchedule.set_epoch: epoch must be >= 0, got {epoch}")
        self._epoch.fill_(epoch)

    def op_enabled(self, name: str, epoch: int | None = None) -> bool:
        """Whether the op called ``name`` runs at ``epoch`` (default: the current epoch)."""
        e = self.epoch if epoch is None else epoch
        return not (name in self.ops_off and self.stop_epoch is not None and e >= self.stop_epoch)

    def multiscale_enabled(self, epoch: int | None = None) -> bool:
        """Whether the collate resizes batches to a random scale at ``epoch`` (default: current)."""
        e = self.epoch if epoch is None else epoch
        return self.multiscale_stop_epoch is None or e < self.multiscale_stop_epoch

    def plan(self, epoch: int | None = None) -> EpochPlan:
        """Everything on or off at ``epoch`` (default: current)."""
        e = self.epoch if epoch is None else epoch
        off = frozenset(n for n in self.ops_off if not self.op_enabled(n, e))
        return EpochPlan(epoch=e, ops_off=off, multiscale=self.multiscale_enabled(e))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(stop_epoch={self.stop_epoch}, ops_off={sorted(self.ops_off)}, "
            f"multiscale_stop_epoch={self.multiscale_stop_epoch}, epoch={self.epoch})"
        )

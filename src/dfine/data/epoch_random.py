"""Random streams of a loader with persistent workers that depend on (seed, epoch) only, so a resume reproduces them.

Fresh workers each epoch draw their seeds, and the sampler its order, from the main process's random state, which
the trainer reseeds every epoch. A loader whose workers live across epochs (``persistent_workers=True``) breaks
that: its workers keep their random state from epoch to epoch, and its iterator is reused without those draws, so
a run resumed at epoch ``k`` (fresh workers, fresh iterator) would see other augmentations and another order.

* :class:`EpochSeededDataset` reseeds each worker at its first item of every epoch from ``(seed, epoch, rank,
  worker id)``; the epoch comes from the :class:`~dfine.data.schedule.AugmentationSchedule`'s shared counter.
* The order comes from a ``DistributedSampler`` (one replica when not distributed), a permutation of
  ``(seed, epoch)`` set with ``set_epoch`` (``dfine.engine.setup``).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from .schedule import AugmentationSchedule

__all__ = ["EpochSeededDataset", "worker_seeds"]


def worker_seeds(seed: int, epoch: int, rank: int, worker_id: int) -> tuple[int, int]:
    """Two independent 32-bit seeds (Python/NumPy, torch) for one worker in one epoch."""
    python_seed, torch_seed = np.random.SeedSequence([seed, epoch, rank, worker_id]).generate_state(2)
    return int(python_seed), int(torch_seed)


class EpochSeededDataset(Dataset):
    """``dataset`` whose items, in a DataLoader worker, draw from a stream seeded per epoch.

    Args:
        dataset: the training dataset (its transforms draw from ``random`` / ``numpy`` / ``torch``).
        schedule: where the current epoch is read (set by the trainer before each epoch).
        seed: the run's seed.
        rank: this process's rank in a distributed run (each rank augments differently).

    In the main process (``num_workers=0``) items come unchanged: the trainer seeds it each epoch.
    """

    def __init__(self, dataset: Dataset, schedule: AugmentationSchedule, seed: int, rank: int = 0) -> None:
        self.dataset = dataset
        self.schedule = schedule
        self.seed = seed
        self.rank = rank
        self._seeded_epoch: int | None = None  # per worker process: each holds its own copy of this object

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        worker = get_worker_info()
        if worker is not None and self._seeded_epoch != self.schedule.epoch:
            self._seeded_epoch = self.schedule.epoch
            python_seed, torch_seed = worker_seeds(self.seed, self._seeded_epoch, self.rank, worker.id)
            random.seed(python_seed)
            np.random.seed(python_seed)
            torch.manual_seed(torch_seed)
        return self.dataset[index]

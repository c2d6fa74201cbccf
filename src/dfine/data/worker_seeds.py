"""Random streams for persistent DataLoader workers that a resumed run reproduces.

A worker that lives across epochs (``persistent_workers=True``) keeps its random state from one epoch
to the next, so after a resume at epoch ``k`` its fresh workers would draw other augmentations than
the uninterrupted run did. :class:`EpochSeededDataset` reseeds each worker at its first item of every
epoch from ``(seed, epoch, rank, worker id)``: the augmentations of epoch ``k`` then depend on nothing
that came before, with persistent workers or fresh ones. The epoch comes from the
:class:`~dfine.data.schedule.AugmentationSchedule`'s shared-memory counter.
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

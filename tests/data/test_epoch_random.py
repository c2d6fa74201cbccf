"""Persistent DataLoader workers draw the same augmentations at epoch k as a resumed run's fresh workers."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dfine.data.epoch_random import EpochSeededDataset, worker_seeds
from dfine.data.schedule import AugmentationSchedule


class RandomDraws(Dataset):
    """Each item: one draw from each random source a transform may use, plus the epoch its worker saw."""

    def __init__(self, schedule: AugmentationSchedule) -> None:
        self.schedule = schedule

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> torch.Tensor:
        draws = [torch.rand(()).item(), random.random(), float(np.random.rand()), float(self.schedule.epoch)]
        return torch.tensor(draws, dtype=torch.float64)


def _epochs(loader: DataLoader, schedule: AugmentationSchedule, epochs: range) -> dict[int, torch.Tensor]:
    seen = {}
    for epoch in epochs:
        schedule.set_epoch(epoch)
        seen[epoch] = torch.cat(list(loader))
    return seen


def _loader(dataset: Dataset) -> DataLoader:
    return DataLoader(dataset, batch_size=2, num_workers=2, persistent_workers=True)


def test_a_resumed_run_s_fresh_workers_draw_what_the_persistent_ones_drew():
    schedule = AugmentationSchedule()
    through = _epochs(_loader(EpochSeededDataset(RandomDraws(schedule), schedule, seed=7)), schedule, range(3))
    assert torch.equal(through[1][:, 3], torch.ones(8, dtype=torch.float64))  # the workers saw set_epoch
    assert not torch.equal(through[0][:, :3], through[1][:, :3])  # a new stream each epoch
    resumed_schedule = AugmentationSchedule()
    resumed = EpochSeededDataset(RandomDraws(resumed_schedule), resumed_schedule, seed=7)
    assert torch.equal(_epochs(_loader(resumed), resumed_schedule, range(2, 3))[2], through[2])
    other_seed = EpochSeededDataset(RandomDraws(resumed_schedule), resumed_schedule, seed=8)
    assert not torch.equal(_epochs(_loader(other_seed), resumed_schedule, range(2, 3))[2], through[2])


def test_without_reseeding_persistent_workers_would_not_resume_the_same():
    _seed_all(0)
    schedule = AugmentationSchedule()
    through = _epochs(_loader(RandomDraws(schedule)), schedule, range(3))
    _seed_all(0)  # what the trainer does at every epoch start, here the same for both
    resumed_schedule = AugmentationSchedule()
    resumed = _epochs(_loader(RandomDraws(resumed_schedule)), resumed_schedule, range(2, 3))
    assert not torch.equal(resumed[2][:, :3], through[2][:, :3])


def test_seeds_differ_by_epoch_rank_and_worker():
    seeds = {worker_seeds(0, e, r, w) for e in range(3) for r in range(2) for w in range(4)}
    assert len(seeds) == 24 and worker_seeds(0, 1, 0, 2) == worker_seeds(0, 1, 0, 2)


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def test_items_in_the_main_process_are_untouched():
    schedule = AugmentationSchedule()
    _seed_all(5)
    expected = RandomDraws(schedule)[0]
    _seed_all(5)
    assert torch.equal(EpochSeededDataset(RandomDraws(schedule), schedule, seed=1)[0], expected)

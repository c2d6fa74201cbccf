"""AugmentationSchedule: what is on at epoch e, seen identically by the trainer and the loader workers."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from dfine.data.collate import BatchImageCollateFunction
from dfine.data.schedule import OFFICIAL_STOP_OPS, AugmentationSchedule, EpochPlan


def test_official_policy_stops_three_ops_from_stop_epoch():
    schedule = AugmentationSchedule(stop_epoch=72)  # D-FINE-L
    assert set(OFFICIAL_STOP_OPS) == {"RandomPhotometricDistort", "RandomZoomOut", "RandomIoUCrop"}
    for name in OFFICIAL_STOP_OPS:
        assert schedule.op_enabled(name, epoch=71)
        assert not schedule.op_enabled(name, epoch=72) and not schedule.op_enabled(name, epoch=100)
    assert schedule.op_enabled("RandomHorizontalFlip", epoch=100)  # not in the policy: always on
    assert schedule.multiscale_enabled(71) and not schedule.multiscale_enabled(72)


def test_multiscale_has_its_own_stop_epoch_and_plan_answers_everything():
    schedule = AugmentationSchedule(stop_epoch=10, ops_off=["Mosaic"], multiscale_stop_epoch=5)
    assert schedule.plan(4) == EpochPlan(epoch=4, ops_off=frozenset(), multiscale=True)
    assert schedule.plan(7) == EpochPlan(epoch=7, ops_off=frozenset(), multiscale=False)
    assert schedule.plan(10) == EpochPlan(epoch=10, ops_off=frozenset({"Mosaic"}), multiscale=False)
    never = AugmentationSchedule()
    assert never.op_enabled("RandomIoUCrop", 10**6) and never.multiscale_enabled(10**6)


def test_current_epoch_and_input_checks():
    schedule = AugmentationSchedule(stop_epoch=3)
    assert schedule.epoch == 0 and schedule.op_enabled("RandomZoomOut")
    schedule.set_epoch(3)
    assert schedule.epoch == 3 and not schedule.op_enabled("RandomZoomOut")
    with pytest.raises(ValueError, match="stop_epoch"):
        AugmentationSchedule(stop_epoch=-1)
    with pytest.raises(TypeError, match="list of op names"):
        AugmentationSchedule(stop_epoch=1, ops_off="RandomZoomOut")
    with pytest.raises(ValueError, match="epoch must be"):
        schedule.set_epoch(-2)


class _EpochEcho(Dataset):
    """Each item reports what the worker's copy of the schedule says."""

    def __init__(self, schedule: AugmentationSchedule) -> None:
        self.schedule = schedule

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int):
        on = self.schedule.op_enabled("RandomZoomOut")
        return torch.zeros(3, 32, 32), {"epoch": self.schedule.epoch, "zoom": on}


def test_persistent_workers_see_set_epoch():
    schedule = AugmentationSchedule(stop_epoch=1)
    collate = BatchImageCollateFunction(base_size=32, base_size_repeat=None, schedule=schedule)
    loader = DataLoader(_EpochEcho(schedule), batch_size=2, num_workers=1, persistent_workers=True, collate_fn=collate)
    seen = []
    for epoch in range(3):
        schedule.set_epoch(epoch)
        seen.append({(t["epoch"], t["zoom"]) for _, targets in loader for t in targets})
    assert seen == [{(0, True)}, {(1, False)}, {(2, False)}]

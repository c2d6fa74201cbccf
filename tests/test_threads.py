"""dfine.threads: the intra-op thread count comes from the usable cores minus loader workers, unless asked."""

from __future__ import annotations

import os

import pytest
import torch

from dfine import threads
from dfine.threads import ThreadPlan, apply_threads, default_loader_workers, plan_threads, usable_cores


@pytest.fixture
def four_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


def test_usable_cores_follow_the_affinity_mask(four_cores):
    assert usable_cores() == 4


def test_usable_cores_without_affinity_support(monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert usable_cores() == 3


def test_cpu_runs_use_every_usable_core_and_cuda_runs_leave_the_workers_theirs(four_cores):
    assert plan_threads(loader_workers=1).intra_op_threads == 4
    assert plan_threads(loader_workers=1).source == "usable cores"
    assert plan_threads(loader_workers=1, device_type="cuda").intra_op_threads == 3
    assert plan_threads(loader_workers=8, device_type="cuda").intra_op_threads == 1


def test_explicit_request_and_environment_win(four_cores, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    plan = plan_threads(loader_workers=1)
    assert (plan.intra_op_threads, plan.source) == (2, "OMP_NUM_THREADS")
    plan = plan_threads(loader_workers=1, requested=3)
    assert (plan.intra_op_threads, plan.source) == (3, "--threads")
    with pytest.raises(ValueError, match="--threads must be at least 1"):
        plan_threads(requested=0)


def test_describe_names_the_choice(four_cores, monkeypatch):
    monkeypatch.setattr(threads, "others_running", lambda: 0)
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    line = plan_threads(loader_workers=2, device_type="cuda").describe()
    assert "2 intra-op" in line and "4 usable cores" in line and "2 loader workers" in line
    assert "OMP_WAIT_POLICY=PASSIVE" in line and "share these cores" not in line


def test_a_busy_machine_gets_the_advice_once_it_matters(four_cores, monkeypatch):
    monkeypatch.setattr(threads, "others_running", lambda: 3)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert "3 other runnable task(s)" in plan_threads().describe()
    assert "OMP_WAIT_POLICY=PASSIVE or --threads 1" in plan_threads().describe()
    assert "share these cores" not in plan_threads(requested=1).describe()  # one thread has no barrier to wait at
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    assert "share these cores" not in plan_threads().describe()


def test_inference_leaves_the_busy_cores_and_training_does_not(four_cores, monkeypatch):
    monkeypatch.setattr(threads, "others_running", lambda: 1)
    plan = plan_threads(adapt_to_load=True)
    assert (plan.intra_op_threads, plan.source) == (3, "usable cores - busy cores")
    assert "share these cores" not in plan.describe()  # already acted on
    assert plan_threads().intra_op_threads == 4  # a training run keeps its count (reproducible runs)
    assert plan_threads(requested=4, adapt_to_load=True).intra_op_threads == 4  # an explicit count wins
    monkeypatch.setattr(threads, "others_running", lambda: 9)
    assert plan_threads(adapt_to_load=True).intra_op_threads == 1


def test_others_running_counts_a_spinning_process():
    import subprocess
    import sys
    import time

    quiet = threads.others_running()
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert threads.others_running(samples=9) >= min(1, quiet + 1)
    finally:
        spinner.kill()
        spinner.wait()


def test_others_running_is_zero_where_proc_is_missing(monkeypatch):
    def missing(*args, **kwargs):
        raise OSError("no /proc")

    monkeypatch.setattr("builtins.open", missing)
    assert threads.others_running(samples=1) == 0


def test_default_loader_workers():
    assert default_loader_workers(1) == 1
    assert default_loader_workers(2) == 1
    assert default_loader_workers(16) == threads.MAX_DEFAULT_WORKERS


def test_apply_sets_torch_threads():
    before = torch.get_num_threads()
    try:
        apply_threads(ThreadPlan(cores=2, loader_workers=0, intra_op_threads=1, source="--threads", wait_policy="x"))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)

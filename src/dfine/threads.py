"""How many CPU threads a dfine run uses, chosen from the cores this process may run on.

PyTorch's default intra-op thread count is the machine's core count, which ignores CPU affinity
(``taskset``, container cpusets). :func:`plan_threads` starts from ``os.sched_getaffinity``; an explicit
request (``--threads``, ``OMP_NUM_THREADS``) wins. On a CUDA run the loader workers do the CPU work, so
they are subtracted; on a CPU run the training step is the CPU work and the workers only fill their
prefetch queue between steps, so every usable core runs the step (measured on the same-data bench, 2
cores, 1 worker: 1 thread took 234 s to the first evaluation, 2 threads 159 s).

When another process wants a core, OpenMP threads that spin at barriers (the runtime's default) lose
3-4x; ``OMP_WAIT_POLICY=PASSIVE`` bounds that to 1.3-1.5x at a quiet-machine cost of 9 % (training) to
36 % (single-image inference) (``benchmarks/RESULTS.md``, "CPU threads under load"). The variable must be
set before PyTorch loads, so dfine does not set it; a run that finds the CPU busy says so in its first
line.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch

__all__ = [
    "ThreadPlan",
    "apply_threads",
    "default_loader_workers",
    "others_running",
    "plan_threads",
    "usable_cores",
]

MAX_DEFAULT_WORKERS = 4  # data-loader workers beyond this rarely pay for their memory on a CPU run


def usable_cores() -> int:
    """The number of CPU cores this process may run on (its affinity mask; ``os.cpu_count`` elsewhere)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def default_loader_workers(cores: int | None = None) -> int:
    """Data-loader workers for a training run: one core is left to the training step, at most 4."""
    cores = usable_cores() if cores is None else cores
    return max(1, min(MAX_DEFAULT_WORKERS, cores - 1))


@dataclass(frozen=True)
class ThreadPlan:
    """The intra-op thread count of a run and where it came from.

    Attributes:
        cores: cores this process may use.
        loader_workers: data-loader worker processes sharing them.
        intra_op_threads: ``torch.set_num_threads`` value.
        source: ``"--threads"``, ``"OMP_NUM_THREADS"`` or ``"cores - workers"``.
        wait_policy: the OpenMP runtime's ``OMP_WAIT_POLICY`` (``"unset"`` when not given).
        others_running: runnable tasks of other processes when the plan was made.
    """

    cores: int
    loader_workers: int
    intra_op_threads: int
    source: str
    wait_policy: str
    others_running: int = 0

    def describe(self) -> str:
        """One line for the start of a run (with advice when other processes compete for the cores)."""
        line = (
            f"CPU threads: {self.intra_op_threads} intra-op ({self.source}; {self.cores} usable cores, "
            f"{self.loader_workers} loader workers; OMP_WAIT_POLICY={self.wait_policy})"
        )
        busy = self.others_running and not self.source.endswith("busy cores")
        if busy and self.wait_policy.upper() != "PASSIVE" and self.intra_op_threads > 1:
            line += (
                f"; {self.others_running} other runnable task(s) share these cores: spinning OpenMP threads can "
                "run 3-4x slower beside them, OMP_WAIT_POLICY=PASSIVE or --threads 1 bounds that (RESULTS.md)"
            )
        return line


def others_running(samples: int = 5, interval_s: float = 0.01) -> int:
    """Runnable tasks of other processes now: ``procs_running`` minus this process's running threads.

    The median of a few samples of ``/proc/stat``; 0 where it cannot be read (not Linux).
    """
    counts = []
    for i in range(samples):
        try:
            with open("/proc/stat", encoding="ascii") as stat:
                running = next(int(line.split()[1]) for line in stat if line.startswith("procs_running"))
            own = sum(_thread_state(task) == "R" for task in os.listdir("/proc/self/task"))
        except (OSError, StopIteration, ValueError):
            return 0
        counts.append(max(0, running - own))
        if i + 1 < samples:
            time.sleep(interval_s)
    return sorted(counts)[len(counts) // 2]


def _thread_state(task: str) -> str:
    try:
        with open(f"/proc/self/task/{task}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def plan_threads(
    loader_workers: int = 0, requested: int | None = None, device_type: str = "cpu", adapt_to_load: bool = False
) -> ThreadPlan:
    """The thread plan for a process that runs ``loader_workers`` data-loader workers beside it.

    Args:
        loader_workers: worker processes that share this process's cores.
        requested: an explicit count (``--threads``); None takes ``OMP_NUM_THREADS`` when set, else the
            usable cores (minus the workers when ``device_type`` is not ``cpu``; at least 1).
        device_type: where the model runs (``cpu``, ``cuda``...).
        adapt_to_load: also leave the cores that other processes are running on now (inference: a
            thread count changes results only by fp32 rounding; training keeps its count reproducible).
    """
    if requested is not None and requested < 1:
        raise ValueError(f"--threads must be at least 1, got {requested}")
    cores = usable_cores()
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if requested is not None:
        threads, source = requested, "--threads"
    elif env.isdigit() and int(env) > 0:
        threads, source = int(env), "OMP_NUM_THREADS"
    elif device_type == "cpu":
        threads, source = cores, "usable cores"
    else:
        threads, source = max(1, cores - loader_workers), "usable cores - loader workers"
    wait_policy = os.environ.get("OMP_WAIT_POLICY", "unset")
    others = others_running()
    if adapt_to_load and others and source.startswith("usable cores") and threads > 1:
        threads, source = max(1, threads - others), source + " - busy cores"
    return ThreadPlan(cores, loader_workers, threads, source, wait_policy, others)


def apply_threads(plan: ThreadPlan) -> None:
    """Set PyTorch's intra-op thread count to the plan's (a process-wide setting)."""
    if torch.get_num_threads() != plan.intra_op_threads:
        torch.set_num_threads(plan.intra_op_threads)

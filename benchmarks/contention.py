"""CPU threads under load: D-FINE-N inference and training steps, quiet and beside a CPU-bound process.

Each configuration (intra-op threads x ``OMP_WAIT_POLICY``) runs in its own process (the OpenMP runtime
reads its environment when PyTorch loads), first on a quiet machine, then while one competing process
spins a single-threaded matmul loop. Reports the median time of each and the slowdown (loaded / quiet).
Inference is the default predict path (``DFINE`` deploy with its speedups, 640x640, batch 1); training is
the public API's loop (``DFINEModel`` in train mode, official criterion, AdamW, batch 4 at 320 px).

Usage::

    python benchmarks/contention.py --runs 10 --json contention.json

Run it on an otherwise idle machine: any other process is one more competitor.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = (  # (intra-op threads, OpenMP environment; {} is the runtime's default: spin, then sleep)
    (2, {}),
    (2, {"OMP_WAIT_POLICY": "PASSIVE"}),
    (2, {"GOMP_SPINCOUNT": "10000"}),
    (1, {}),
    (0, {}),  # 0: what `dfine predict` chooses (dfine.threads.plan_threads(adapt_to_load=True)), not for training
)
OMP_KEYS = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")
HOG = "import torch\ntorch.set_num_threads(1)\na = torch.randn(1024, 1024)\nwhile True:\n    a @ a\n"


def _measure(kind: str, threads: int, runs: int) -> list[float]:
    """Seconds per call of ``kind`` (``infer`` or ``train``), in this process."""
    import warnings

    import torch

    import dfine

    if threads == 0:
        from dfine.threads import apply_threads, plan_threads

        apply_threads(plan_threads(adapt_to_load=True))
    else:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    if kind == "infer":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            detector = dfine.DFINE("n", device="cpu")
        image = torch.randint(0, 256, (640, 640, 3), dtype=torch.uint8).numpy()
        step = lambda: detector.predict(image)  # noqa: E731
    else:
        step = _train_step()
    for _ in range(3):
        step()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def _train_step():
    import torch

    import dfine
    from dfine.model.fast_paths import use_training_paths

    model = dfine.build_model("n").train()
    use_training_paths(model)
    model = model.to(memory_format=torch.channels_last)
    criterion = dfine.build_criterion()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 320, 320, generator=gen).contiguous(memory_format=torch.channels_last)
    targets = [
        {"boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.3, 0.6, 0.1, 0.1]]), "labels": torch.tensor([1, 7])}
        for _ in range(4)
    ]

    def step():
        losses = criterion(model(images, targets), targets)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()

    return step


def _child(args: argparse.Namespace) -> None:
    times = _measure(args.child, args.threads, args.runs)
    print(json.dumps({"median_s": statistics.median(times), "times_s": times}))


def _run_config(kind: str, threads: int, omp_env: dict[str, str], runs: int, loaded: bool) -> float:
    env = {k: v for k, v in os.environ.items() if k not in OMP_KEYS} | omp_env
    cmd = [sys.executable, __file__, "--child", kind, "--threads", str(threads), "--runs", str(runs)]
    hog = subprocess.Popen([sys.executable, "-c", HOG]) if loaded else None
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    return json.loads(out.strip().splitlines()[-1])["median_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="timed calls per configuration")
    parser.add_argument("--kinds", nargs="+", default=["infer", "train"], choices=["infer", "train"])
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", choices=["infer", "train"], help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    print(f"load average at start: {os.getloadavg()}, usable cores {len(os.sched_getaffinity(0))}")
    rows = []
    for kind in args.kinds:
        for threads, omp_env in CONFIGS:
            if threads == 0 and kind == "train":
                continue
            quiet = _run_config(kind, threads, omp_env, args.runs, loaded=False)
            loaded = _run_config(kind, threads, omp_env, args.runs, loaded=True)
            env_text = " ".join(f"{k}={v}" for k, v in omp_env.items()) or "default"
            env_text += " (dfine predict's choice)" if threads == 0 else ""
            row = {"kind": kind, "threads": threads, "omp_env": env_text, "quiet_ms": quiet * 1e3,
                   "loaded_ms": loaded * 1e3, "slowdown": loaded / quiet}  # fmt: skip
            rows.append(row)
            print(
                f"{kind:5s} threads={threads} {env_text:24s} "
                f"quiet {row['quiet_ms']:7.1f} ms  loaded {row['loaded_ms']:7.1f} ms  slowdown {row['slowdown']:.2f}x",
                flush=True,
            )
    print(f"load average at end: {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "runs": args.runs}, indent=2))


if __name__ == "__main__":
    main()

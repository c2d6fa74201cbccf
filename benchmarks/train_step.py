"""Training-step time and peak memory of D-FINE on CPU (official recipe: AdamW groups, clip 0.1).

    python benchmarks/train_step.py --size n --batch 4 --image-size 640 --steps 12 --warmup 2

Reports the median step and its parts (forward, criterion, backward, clip + optimizer step), with and
without the FDR / GO-LSD losses (FGL and DDF), and the peak resident memory of each variant. The
model and images are channels-last as the trainer runs them (``--nchw`` for the official layout);
``--amp`` runs the forward under bf16 autocast and the criterion in fp32, as ``--use-amp`` does on CPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import dfine
from dfine.config.schema import ParamGroupSpec
from dfine.engine.optim import build_optimizer
from dfine.engine.trainer import _to_float
from dfine.model.fast_paths import use_training_paths
from dfine.model.summary import count_flops

OFFICIAL_GROUPS = [
    ParamGroupSpec("^(?=.*backbone)(?!.*norm|bn).*$", {"lr": 0.0004}),
    ParamGroupSpec("^(?=.*backbone)(?=.*norm|bn).*$", {"lr": 0.0004, "weight_decay": 0.0}),
    ParamGroupSpec("^(?=.*(?:encoder|decoder))(?=.*(?:norm|bn|bias)).*$", {"weight_decay": 0.0}),
]


def _targets(batch: int, generator: torch.Generator) -> list[dict[str, torch.Tensor]]:
    targets = []
    for _ in range(batch):
        n = int(torch.randint(2, 8, (1,), generator=generator))
        centre = torch.rand(n, 2, generator=generator) * 0.6 + 0.2
        size = torch.rand(n, 2, generator=generator) * 0.3 + 0.05
        targets.append(
            {"labels": torch.randint(0, 80, (n,), generator=generator), "boxes": torch.cat([centre, size], 1)}
        )
    return targets


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(
    size: str,
    batch: int,
    image_size: int,
    steps: int,
    warmup: int,
    local_losses: bool,
    channels_last: bool = True,
    amp: bool = False,
) -> dict[str, float]:
    torch.manual_seed(0)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = dfine.build_model(size).train()
    use_training_paths(model)  # as the trainer does
    model = model.to(memory_format=memory_format)
    weights = None if local_losses else {"loss_vfl": 1, "loss_bbox": 5, "loss_giou": 2}
    losses = ("vfl", "boxes", "local") if local_losses else ("vfl", "boxes")
    criterion = dfine.build_criterion(weight_dict=weights, losses=losses) if weights else dfine.build_criterion()
    optimizer = build_optimizer(model, "AdamW", 0.0008, 0.0001, (0.9, 0.999), groups=OFFICIAL_GROUPS)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, image_size, image_size, generator=generator).contiguous(memory_format=memory_format)
    targets = _targets(batch, generator)
    parts: dict[str, list[float]] = {"forward": [], "criterion": [], "backward": [], "step": [], "total": []}
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            outputs = model(images, targets=targets)
        outputs = _to_float(outputs)
        t1 = time.perf_counter()
        loss = sum(criterion(outputs, targets).values())
        t2 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        t4 = time.perf_counter()
        if i >= warmup:
            for key, value in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
                parts[key].append(value * 1000)
    return {key: statistics.median(values) for key, values in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="n")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=640)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--nchw", action="store_true", help="official NCHW layout instead of channels-last")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast forward (the trainer's --use-amp on CPU)")
    parser.add_argument("--variant", choices=["local", "no-local"], help="run one variant in this process")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.variant:
        result = measure(
            args.size, args.batch, args.image_size, args.steps, args.warmup,
            local_losses=args.variant == "local", channels_last=not args.nchw, amp=args.amp,
        )  # fmt: skip
        print(json.dumps({**result, "peak_rss_mb": _peak_rss_mb()}))
        return
    layout = "NCHW" if args.nchw else "channels-last"
    precision = "bf16 autocast" if args.amp else "fp32"
    peak = matmul_peak_gflops()
    gflops = count_flops(dfine.build_model(args.size), args.image_size)
    floor_ms = 3 * gflops * args.batch / peak * 1e3  # forward + backward ~ 3x the forward FLOPs
    print(
        f"D-FINE-{args.size.upper()} train step, batch {args.batch}, {args.image_size}px, {args.threads} threads, "
        f"{layout}, {precision}; fp32 matmul peak {peak:.0f} GFLOP/s, floor {floor_ms:.0f} ms"
    )
    print(f"{'variant (median ms)':<28}{'total':>8}{'fwd':>8}{'crit':>8}{'bwd':>8}{'step':>8}{'peak RSS MB':>13}")
    results = {}
    for variant in ("no-local", "local"):  # one process each, so the peak memory is the variant's own
        argv = [sys.executable, __file__, "--variant", variant, "--size", args.size, "--batch", str(args.batch),
                "--image-size", str(args.image_size), "--steps", str(args.steps), "--warmup", str(args.warmup),
                "--threads", str(args.threads)] + ["--nchw"] * args.nchw + ["--amp"] * args.amp  # fmt: skip
        out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        r = results[variant] = json.loads(out.strip().splitlines()[-1])
        name = "with FGL + DDF (official)" if variant == "local" else "without FGL / DDF"
        print(
            f"{name:<28}{r['total']:8.0f}{r['forward']:8.0f}{r['criterion']:8.0f}"
            f"{r['backward']:8.0f}{r['step']:8.0f}{r['peak_rss_mb']:13.0f}"
        )
    print(f"official loss step / floor: {results['local']['total'] / floor_ms:.2f}x")
    if args.json:
        summary = {"peak_gflops": peak, "forward_gflops_per_image": gflops, "floor_ms": floor_ms, "variants": results}
        args.json.write_text(json.dumps({**vars(args), **summary, "json": str(args.json)}, indent=2))


def matmul_peak_gflops(n: int = 2048, runs: int = 10) -> float:
    """The fp32 matmul rate of this process's threads (median of ``runs`` n^3 products)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


if __name__ == "__main__":
    main()

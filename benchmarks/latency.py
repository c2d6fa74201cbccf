"""CPU latency of D-FINE at 640x640, batch 1: eager fp32 before/after ``deploy()``, and bf16 autocast.

Also measures the machine's fp32 and bf16 matmul peak (a 2048^3 matmul) and prints the implied compute
floor of each model (FlopCounterMode FLOPs of the deploy model / peak). Results are recorded in
``benchmarks/RESULTS.md``.

Usage::

    PYTHONPATH=src python benchmarks/latency.py --sizes n s --runs 20 --warmup 5 --threads 2 \
        --modes eager,deploy,bf16,deploy+post --json latency.json

Modes:
    eager        ``model.eval()``, fp32.
    deploy       ``copy.deepcopy(model).deploy()``, fp32 (official deploy numerics).
    fast         ``deploy(**fast_deploy_flags(cpu))``: BN folded, channels-last, gather sampling (the form
                 ``dfine.DFINE`` predicts with; fp32 rounding differs from the official by ~2e-4 in logits).
    bf16         the deploy model under ``torch.autocast("cpu", torch.bfloat16)``.
    fast-bf16    the fast model under bf16 autocast.
    deploy+post  the deploy model followed by ``dfine.PostProcessor.decode`` (the ONNX graph's work).
    fast+post    the fast model followed by the post-processor.
    predict      ``dfine.DFINE.predict`` on a 640x640 uint8 array: preprocessing, fast model, post-processing,
                 conversion to a ``Prediction`` (the default inference path end to end).
    compiled+post  ``torch.compile`` (inductor, frozen weights, static shape) of fast+post via
                 ``TorchBackend.compile``; its compile time is printed.

Every forward runs under ``torch.inference_mode()``. The N model loads the fixture-conditioned weights
(``official_n_weights.pth``) when they exist, so that activations look like a trained model's; other
sizes use the random init (timing does not depend on the values, apart from the top-k ties).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import dfine
from dfine.deploy.backend import TorchBackend
from dfine.deploy.metadata import ModelMetadata
from dfine.deploy.wrapper import DeployModel
from dfine.model.dfine import fast_deploy_flags
from dfine.model_info import ModelInfo

MODES = ("eager", "deploy", "fast", "bf16", "fast-bf16", "deploy+post", "fast+post", "predict", "compiled+post")
IMAGE_SIZE = 640
PEAK_MATMUL_SIZE = 2048  # n for the n^3 matmul that measures the peak
DEFAULT_FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "official"


def _fixtures_dir() -> Path:
    return Path(os.environ.get("DFINE_FIXTURES", DEFAULT_FIXTURES))


def time_callable(fn: Callable[[], object], runs: int, warmup: int) -> list[float]:
    """Wall-clock milliseconds of ``runs`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def summarize(times_ms: list[float]) -> dict[str, float]:
    ordered = sorted(times_ms)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return {"median": statistics.median(ordered), "p90": p90, "min": ordered[0], "runs": len(ordered)}


def matmul_peak_gflops(dtype: torch.dtype, runs: int = 20, size: int = PEAK_MATMUL_SIZE) -> float:
    """Median GFLOP/s of a ``size``^3 matmul (2 * size^3 FLOPs) in ``dtype``."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    with torch.inference_mode():
        times = time_callable(lambda: torch.mm(a, b), runs, warmup=3)
    return 2 * size**3 / (statistics.median(times) * 1e-3) / 1e9


def count_gflops(model: torch.nn.Module, images: torch.Tensor) -> float:
    """GFLOPs of one forward (FlopCounterMode: conv/mm/bmm/addmm at 2 FLOPs per multiply-add).

    Uses ``dfine.model.summary.count_flops`` when present (it also counts the fused attention
    kernel, which FlopCounterMode has no formula for); otherwise counts what FlopCounterMode sees.
    """
    try:
        from dfine.model.summary import count_flops
    except ImportError:
        counter = FlopCounterMode(display=False)
        with torch.inference_mode(), counter:
            model(images)
        return counter.get_total_flops() / 1e9
    return count_flops(model, image_size=images.shape[-1])


def build(size: str, weights: Path | None) -> torch.nn.Module:
    model = dfine.build_model(size)
    if weights is not None:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=False), strict=True)
    return model.eval()


def benchmark_size(size: str, modes: list[str], images: torch.Tensor, args: argparse.Namespace) -> dict:
    weights = _fixtures_dir() / f"official_{size}_weights.pth"
    model = build(size, weights if weights.is_file() and not args.random_weights else None)
    deployed = copy.deepcopy(model).deploy()
    fast = copy.deepcopy(model).deploy(**fast_deploy_flags(torch.device("cpu")))
    postprocessor = dfine.PostProcessor()
    orig_sizes = torch.tensor([[IMAGE_SIZE, IMAGE_SIZE]] * images.shape[0])
    compile_seconds = None
    compiled = predict = None
    if "compiled+post" in modes:
        info = ModelInfo.for_config(model.config, size=size)
        compiled = TorchBackend(DeployModel(copy.deepcopy(fast), dfine.PostProcessor()), ModelMetadata.from_info(info))
        compile_seconds = compiled.compile(IMAGE_SIZE, images.shape[0])
        print(f"  {size} compile time {compile_seconds:.1f} s")
    if "predict" in modes:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            predict = dfine.DFINE(size, device="cpu")
            predict.model.load_state_dict(fast.state_dict())  # the same weights, in the predictor's own form
        array = (images[0].permute(1, 2, 0) * 255).to(torch.uint8).numpy()

    def bf16(net: torch.nn.Module) -> Callable[[], object]:
        def run() -> object:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return net(images)

        return run

    runners: dict[str, Callable[[], object]] = {
        "eager": lambda: model(images),
        "deploy": lambda: deployed(images),
        "fast": lambda: fast(images),
        "bf16": bf16(deployed),
        "fast-bf16": bf16(fast),
        "deploy+post": lambda: postprocessor.decode(deployed(images), orig_sizes),
        "fast+post": lambda: postprocessor.decode(fast(images), orig_sizes),
        "predict": lambda: predict.predict(array, conf_threshold=0.25),
        "compiled+post": lambda: compiled(images, orig_sizes),
    }
    result = {
        "weights": "fixture" if weights.is_file() and not args.random_weights else "random",
        "gflops": count_gflops(deployed, images),
        "compile_seconds": compile_seconds,
        "modes": {},
    }
    with torch.inference_mode():
        for mode in modes:
            stats = summarize(time_callable(runners[mode], args.runs, args.warmup))
            result["modes"][mode] = stats
            print(
                f"  {size} {mode:12s} median {stats['median']:7.1f} ms   p90 {stats['p90']:7.1f} ms"
                f"   min {stats['min']:7.1f} ms",
                flush=True,
            )
    return result


def machine_info() -> dict[str, str]:
    info = {"python": platform.python_version(), "torch": torch.__version__}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in lscpu.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("Model name", "CPU(s)"):
                info[key.strip()] = value.strip()
    except (OSError, subprocess.CalledProcessError):
        info["Model name"] = platform.processor()
    return info


def _load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def input_images(batch: int) -> torch.Tensor:
    """The first fixture image (uint8 noise from the official recipe), else seeded uniform noise."""
    path = _fixtures_dir() / "fixture_input.pt"
    if path.is_file():
        images = torch.load(path, weights_only=False)["images_uint8"][:1].float() / 255
        return images.expand(batch, -1, -1, -1).contiguous()
    return torch.rand(batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(1))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["n", "s"], choices=dfine.available_sizes())
    parser.add_argument("--runs", type=int, default=20, help="timed runs per mode (median and p90 reported)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs before timing")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--modes", default="eager,deploy,fast,bf16,fast-bf16", help=f"comma-separated, from {MODES}")
    parser.add_argument("--random-weights", action="store_true", help="do not load the fixture N weights")
    parser.add_argument("--no-peak", action="store_true", help="skip the matmul peak measurement")
    parser.add_argument(
        "--keep-freed-memory", action="store_true", help="dfine.keep_freed_memory() first (as dfine predict does)"
    )
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args()
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in args.modes if m not in MODES]
    if unknown:
        parser.error(f"unknown mode(s) {unknown}; choose from {MODES}")
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.keep_freed_memory:
        print(dfine.keep_freed_memory().describe())
    info = machine_info()
    print(f"{info.get('Model name')} ({info.get('CPU(s)')} CPUs), torch {info['torch']}, {args.threads} threads")
    print(f"load average at start: {_load_average()} (other processes inflate the timings)")

    peaks = {}
    if not args.no_peak:
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            peaks[name] = matmul_peak_gflops(dtype)
            print(f"matmul peak {name}: {peaks[name]:.1f} GFLOP/s ({PEAK_MATMUL_SIZE}^3, median)")

    images = input_images(args.batch)
    results = {}
    for size in args.sizes:
        results[size] = benchmark_size(size, args.modes, images, args)

    print(f"\nbatch {args.batch}, {IMAGE_SIZE}x{IMAGE_SIZE}, median / p90 of {args.runs} runs, ms")
    print(f"{'size':4s} {'GFLOPs':>7s} " + " ".join(f"{m:>17s}" for m in args.modes) + "  floors fp32/bf16")
    for size, res in results.items():
        cells = " ".join(f"{res['modes'][m]['median']:8.1f}/{res['modes'][m]['p90']:<8.1f}" for m in args.modes)
        floors = ""
        if peaks:
            floors = "  " + "/".join(f"{res['gflops'] / peaks[k] * 1e3:.0f}" for k in ("fp32", "bf16"))
        print(f"{size:4s} {res['gflops']:7.2f} {cells}{floors}")

    print(f"load average at end: {_load_average()}")
    if args.json:
        payload = {"machine": info, "args": {k: str(v) for k, v in vars(args).items()}, "peaks": peaks}
        payload["results"] = results
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()

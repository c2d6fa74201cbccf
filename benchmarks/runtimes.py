"""CPU latency of the deployed detector in PyTorch, onnxruntime and OpenVINO (fp32, bf16, INT8; 640x640).

Each runtime runs the same graph, :class:`dfine.deploy.DeployModel` (model + post-processor, i.e.
images and original sizes in, top-300 labels/boxes/scores out), with the same thread count. The
ONNX file is exported once per size (opset 17, dynamic batch, simplified) and the OpenVINO IR is
converted from it, so one file serves batch 1 and batch 4. Reported: the median of ``--runs`` timed
calls after ``--warmup`` untimed ones, per batch and per image, and the compute floor (FLOPs of the
deployed model / the machine's fp32 matmul peak, a 2048^3 matmul on the same threads).

``openvino-int8`` is the IR quantized by :func:`dfine.deploy.quantize.quantize_openvino` (NNCF, the
settings ``dfine export --int8`` uses), calibrated on ``--calibration-images`` generated scenes: the
speed does not depend on the calibration images (its accuracy does: ``benchmarks/int8_accuracy.py``).

Usage::

    PYTHONPATH=src python benchmarks/runtimes.py --sizes n s --batches 1 4 --threads 2 --runs 10
    PYTHONPATH=src python benchmarks/runtimes.py --sizes n --batches 1 --runtimes openvino openvino-int8 --json n.json

The N model loads the fixture-conditioned official weights when present (``DFINE_FIXTURES``), other
sizes use the random init: timing does not depend on the values. Results go to
``benchmarks/RESULTS.md`` by hand; ``--json`` saves the raw numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

import dfine
from dfine.deploy import OnnxRuntimeBackend, OpenVINOBackend, TorchBackend, export_onnx, export_openvino
from dfine.deploy.benchmark import time_backend
from dfine.deploy.quantize import calibration_set, quantize_openvino
from dfine.deploy.wrapper import load_deploy_model
from dfine.predictor import RandomWeightsWarning

IMAGE_SIZE = 640
PEAK_MATMUL_SIZE = 2048  # n of the n^3 matmul that measures the fp32 peak
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "dfine"
DEFAULT_FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "official"
RUNTIMES = ("torch", "onnxruntime", "openvino", "openvino-bf16", "openvino-int8")


def matmul_peak_gflops(threads: int, runs: int = 10) -> float:
    """Median fp32 GFLOP/s of a 2048^3 matmul (2 * n^3 FLOPs)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(PEAK_MATMUL_SIZE, PEAK_MATMUL_SIZE), torch.randn(PEAK_MATMUL_SIZE, PEAK_MATMUL_SIZE)
    times = []
    for index in range(runs + 2):
        start = time.perf_counter()
        torch.mm(a, b)
        if index >= 2:
            times.append(time.perf_counter() - start)
    return 2 * PEAK_MATMUL_SIZE**3 / statistics.median(times) / 1e9


def _model(size: str) -> tuple:
    weights = Path(os.environ.get("DFINE_FIXTURES", DEFAULT_FIXTURES)) / f"official_{size}_weights.pth"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        checkpoint = weights if weights.is_file() else None
        model, metadata = load_deploy_model(CONFIGS / f"dfine_hgnetv2_{size}_coco.yml", checkpoint)
    return model, metadata, "fixture" if checkpoint else "random"


def _batches(batch: int, count: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(batch)
    sizes = torch.tensor([[IMAGE_SIZE, IMAGE_SIZE]] * batch)
    return [(torch.rand(batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator), sizes) for _ in range(count)]


def benchmark_size(size: str, args: argparse.Namespace, workdir: Path) -> dict:
    torch.set_num_threads(args.threads)
    model, metadata, weights = _model(size)
    gflops = dfine.count_flops(model.model, IMAGE_SIZE)
    start = time.perf_counter()
    onnx_file = export_onnx(model, workdir / f"{size}.onnx", metadata).path
    export_seconds = time.perf_counter() - start
    xml = export_openvino(onnx_file, workdir / f"{size}.xml", metadata)
    result = {"size": size, "weights": weights, "gflops": gflops, "onnx_export_s": export_seconds, "runs": {}}
    if "openvino-int8" in args.runtimes:
        calibration = calibration_set(None, args.calibration_images)
        int8 = quantize_openvino(xml, workdir / f"{size}_int8.xml", metadata, calibration)
        result["int8_quantize_s"] = int8.seconds
    backends = {
        "torch": lambda: TorchBackend(model, metadata, "cpu"),
        "onnxruntime": lambda: OnnxRuntimeBackend(onnx_file, threads=args.threads),
        "openvino": lambda: OpenVINOBackend(xml, threads=args.threads),
        "openvino-bf16": lambda: OpenVINOBackend(xml, threads=args.threads, precision="bf16"),
        "openvino-int8": lambda: OpenVINOBackend(int8.path, threads=args.threads),
    }
    for name in args.runtimes:
        backend = backends[name]()
        for batch in args.batches:
            torch.set_num_threads(args.threads)
            latency = time_backend(backend, _batches(batch), warmup=args.warmup, runs=args.runs)
            result["runs"][f"{name}/{batch}"] = {
                "median_ms": latency.median,
                "p90_ms": latency.p90,
                "runs": latency.runs,
            }
            per_image = latency.median / batch
            print(f"{size} {name:14s} batch {batch}: median {latency.median:7.1f} ms ({per_image:6.1f} ms/img)")
        del backend
    return result


def _table(results: list[dict], args: argparse.Namespace, peak: float) -> str:
    header = ["size", "batch"] + [f"{name} (ms, ms/img)" for name in args.runtimes] + ["fp32 floor (ms)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for result in results:
        for batch in args.batches:
            cells = [result["size"].upper(), str(batch)]
            for name in args.runtimes:
                median = result["runs"][f"{name}/{batch}"]["median_ms"]
                cells.append(f"{median:.1f} ({median / batch:.1f})")
            cells.append(f"{result['gflops'] * batch / peak * 1e3:.0f}")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["n", "s"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=list(RUNTIMES[:3]))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10, help="timed calls per (runtime, batch)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--calibration-images", type=int, default=32, help="openvino-int8: generated scenes")
    parser.add_argument("--json", type=Path, help="write the raw numbers here")
    args = parser.parse_args()
    load_before = os.getloadavg()
    peak = matmul_peak_gflops(args.threads)
    print(f"fp32 matmul peak: {peak:.1f} GFLOP/s ({args.threads} threads)")
    with tempfile.TemporaryDirectory() as workdir:
        results = [benchmark_size(size, args, Path(workdir)) for size in args.sizes]
    load_after = os.getloadavg()
    info = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "threads": args.threads,
        "peak_fp32_gflops": peak,
        "load_1min_before_after": [load_before[0], load_after[0]],
    }
    print(json.dumps(info))
    for result in results:
        int8 = f", INT8 quantization {result['int8_quantize_s']:.1f} s" if "int8_quantize_s" in result else ""
        export = f"ONNX export {result['onnx_export_s']:.1f} s{int8}"
        print(f"{result['size'].upper()}: {result['gflops']:.2f} GFLOPs, {export}")
    print(_table(results, args, peak))
    if args.json:
        args.json.write_text(json.dumps({"info": info, "results": results}, indent=1))


if __name__ == "__main__":
    main()

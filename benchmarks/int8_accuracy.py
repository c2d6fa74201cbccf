"""INT8 on the CPU: which quantizer and settings, by AP on a trained model's val set and by latency.

Each variant quantizes the same fp32 export:

* ``nncf-{cnn,transformer}-{performance,mixed}``: NNCF post-training quantization of the OpenVINO IR
  with the default (CNN) or the TRANSFORMER scheme, symmetric (PERFORMANCE) or asymmetric (MIXED)
  activations; ``nncf-transformer-performance`` is what ``dfine export --int8`` ships;
* ``ort-qdq-conv`` / ``ort-qdq-conv-matmul``: onnxruntime static quantization (QDQ, per-channel int8
  weights, uint8 activations, MinMax calibration) of the Conv (and MatMul) nodes of the ONNX file.

Accuracy (``--weights``, ``--data``): the trained model is exported at its own input size,
calibrated on ``--calibration-images`` of the dataset's train split and scored on its ``--split``
with :func:`dfine.deploy.accuracy.check_accuracy` (fp32 and INT8 through the same pipeline).
Latency (``--latency``): D-FINE-N at 640 (fixture weights, as ``runtimes.py``), each variant
calibrated on 32 generated scenes, timed at batch 1 on ``--threads`` threads, median of ``--runs``;
with the fp32 floor (FLOPs / the fp32 matmul peak measured in the same run).

Usage (the README quick start's model and data)::

    PYTHONPATH=src python benchmarks/int8_accuracy.py --weights output/dfine_hgnetv2_n_synthetic/best.pth \\
        --data data/synthetic --json int8.json            # accuracy (run it niced on a shared machine)
    PYTHONPATH=src python benchmarks/int8_accuracy.py --latency --json int8_latency.json   # on a quiet machine
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from runtimes import matmul_peak_gflops  # benchmarks/, the script's own folder

import dfine
from dfine.deploy import OnnxRuntimeBackend, OpenVINOBackend, export_onnx, export_openvino
from dfine.deploy.accuracy import check_accuracy, validation_set
from dfine.deploy.benchmark import time_backend
from dfine.deploy.metadata import ModelMetadata
from dfine.deploy.quantize import CalibrationSet, calibration_set, quantize_openvino
from dfine.deploy.runtime import preprocess
from dfine.deploy.wrapper import load_deploy_model

REPO_ROOT = Path(__file__).resolve().parents[1]
N_CONFIG = REPO_ROOT / "configs" / "dfine" / "dfine_hgnetv2_n_coco.yml"
FIXTURE_N_WEIGHTS = REPO_ROOT / "tests" / "fixtures" / "official" / "official_n_weights.pth"

VARIANTS = (
    "nncf-cnn-performance",
    "nncf-cnn-mixed",
    "nncf-transformer-performance",
    "nncf-transformer-mixed",
    "ort-qdq-conv",
    "ort-qdq-conv-matmul",
)
LATENCY_CALIBRATION_IMAGES = 32  # speed does not depend on the calibration images


def _inputs(calibration: CalibrationSet, image_size: int) -> list[dict[str, np.ndarray]]:
    items = []
    for index in range(len(calibration)):
        images, sizes = preprocess([calibration[index]], image_size)
        items.append({"images": images.numpy(), "orig_target_sizes": sizes.numpy()})
    return items


def _nncf_variant(xml: Path, out: Path, metadata: ModelMetadata, calibration: CalibrationSet, variant: str) -> Path:
    import nncf
    import openvino as ov

    _, scheme, preset = variant.split("-")
    if scheme == "transformer":  # the shipped path
        return quantize_openvino(xml, out, metadata, calibration, preset=preset).path
    quantized = nncf.quantize(
        ov.Core().read_model(str(xml)),
        nncf.Dataset(_inputs(calibration, metadata.image_size)),
        preset=nncf.QuantizationPreset.PERFORMANCE if preset == "performance" else nncf.QuantizationPreset.MIXED,
        subset_size=len(calibration),
    )
    ov.save_model(quantized, str(out), compress_to_fp16=False)
    return out


def _ort_variant(onnx_file: Path, out: Path, metadata: ModelMetadata, calibration: CalibrationSet, ops: str) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(_inputs(calibration, metadata.image_size))

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    prepared = out.with_name(out.stem + ".pre.onnx")
    quant_pre_process(str(onnx_file), str(prepared), skip_symbolic_shape=True)
    quantize_static(
        str(prepared),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=ops.split(","),
    )
    return out


def quantize_variant(
    variant: str, onnx_file: Path, xml: Path, metadata: ModelMetadata, calibration: CalibrationSet, threads: int
) -> tuple[Callable[[], object], float]:
    """Quantize one variant: (a function opening it as a backend, seconds)."""
    start = time.perf_counter()
    if variant.startswith("nncf"):
        path = _nncf_variant(xml, xml.with_name(f"{xml.stem}_{variant}.xml"), metadata, calibration, variant)
        opener = lambda: OpenVINOBackend(path, threads=threads)  # noqa: E731
    else:
        ops = "Conv,MatMul" if variant.endswith("matmul") else "Conv"
        path = _ort_variant(
            onnx_file, onnx_file.with_name(f"{onnx_file.stem}_{variant}.onnx"), metadata, calibration, ops
        )
        opener = lambda: OnnxRuntimeBackend(path, threads=threads)  # noqa: E731
    return opener, time.perf_counter() - start


def accuracy(args: argparse.Namespace, workdir: Path) -> dict:
    model, metadata = load_deploy_model(None, args.weights)
    onnx_file = export_onnx(model, workdir / "trained.onnx", metadata).path
    xml = export_openvino(onnx_file, workdir / "trained.xml", metadata)
    calibration = calibration_set(args.data, args.calibration_images)
    dataset = validation_set(args.data, args.split)
    fp32 = {
        "openvino": OpenVINOBackend(xml, threads=args.threads),
        "ort": OnnxRuntimeBackend(onnx_file, threads=args.threads),
    }
    rows = {}
    for variant in args.variants:
        opener, seconds = quantize_variant(variant, onnx_file, xml, metadata, calibration, args.threads)
        reference = fp32["openvino" if variant.startswith("nncf") else "ort"]
        check = check_accuracy(reference, opener(), dataset)
        rows[variant] = {
            "quantize_s": seconds,
            "ap_fp32": check.reference_ap,
            "ap_int8": check.quantized_ap,
            "ap50_fp32": check.reference_ap50,
            "ap50_int8": check.quantized_ap50,
            "drop": check.drop,
        }
        print(f"{variant:30s} quantize {seconds:6.1f} s  {check.describe()}", flush=True)
    return {
        "weights": str(args.weights),
        "data": str(dataset.source),
        "image_size": metadata.image_size,
        "images": len(dataset),
        "calibration": calibration.description,
        "variants": rows,
    }


def latency(args: argparse.Namespace, workdir: Path) -> dict:
    torch.set_num_threads(args.threads)
    peak = matmul_peak_gflops(args.threads)
    weights = FIXTURE_N_WEIGHTS if FIXTURE_N_WEIGHTS.is_file() else None  # timing does not depend on the values
    model, metadata = load_deploy_model(N_CONFIG, weights)
    gflops = dfine.count_flops(model.model, 640)
    onnx_file = export_onnx(model, workdir / "n.onnx", metadata).path
    xml = export_openvino(onnx_file, workdir / "n.xml", metadata)
    calibration = calibration_set(None, LATENCY_CALIBRATION_IMAGES)
    openers = {
        "openvino-fp32": lambda: OpenVINOBackend(xml, threads=args.threads),
        "ort-fp32": lambda: OnnxRuntimeBackend(onnx_file, threads=args.threads),
    }
    seconds = {}
    for variant in args.variants:
        openers[variant], seconds[variant] = quantize_variant(
            variant, onnx_file, xml, metadata, calibration, args.threads
        )
    floor_ms = gflops / peak * 1e3
    generator = torch.Generator().manual_seed(0)
    rows = {}
    for name, opener in openers.items():
        inputs = [(torch.rand(1, 3, 640, 640, generator=generator), torch.tensor([[640, 640]])) for _ in range(2)]
        measured = time_backend(opener(), inputs, warmup=args.warmup, runs=args.runs)
        rows[name] = {"median_ms": measured.median, "p90_ms": measured.p90, "x_floor": measured.median / floor_ms}
        rows[name]["quantize_s"] = seconds.get(name)
        print(f"{name:30s} median {measured.median:6.1f} ms  ({measured.median / floor_ms:.2f}x the fp32 floor)")
    return {"weights": str(weights), "gflops": gflops, "peak_fp32_gflops": peak, "floor_ms": floor_ms, "runs": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, help="trained checkpoint (accuracy)")
    parser.add_argument("--data", type=Path, help="its dataset: calibration from train, scored on --split")
    parser.add_argument("--split", default="val")
    parser.add_argument("--calibration-images", type=int, default=300)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--latency", action="store_true", help="time the variants on D-FINE-N at 640 instead")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the raw numbers here")
    args = parser.parse_args()
    if not args.latency and (args.weights is None or args.data is None):
        parser.error("accuracy needs --weights and --data (or pass --latency)")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as workdir:
        result = latency(args, Path(workdir)) if args.latency else accuracy(args, Path(workdir))
    result["info"] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "threads": args.threads,
        "load_1min_before_after": [load_before[0], os.getloadavg()[0]],
    }
    print(json.dumps(result["info"]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""Deployment command lines: ``dfine export``, ``dfine predict --backend``, and the official tools.

The official scripts keep their command lines and are thin shims over the functions here:

* ``tools/deployment/export_onnx.py --check -c CONFIG -r CKPT`` = ``dfine export --format onnx``;
* ``tools/inference/{torch,onnx,openvino,trt}_inf.py ... --im-file X`` = ``dfine predict --backend``
  (one pipeline: :func:`dfine.deploy.pipeline.run_inference`);
* ``tools/benchmark/get_info.py -c CONFIG`` and ``tools/benchmark/trt_benchmark.py``.

Errors a user can fix (a missing file, a checkpoint that does not fit the config, an unsupported
opset, a missing optional runtime) end with one line ``PROG: error: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import functools
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm import tqdm

from ..config.presets import available_sizes
from ..config.yaml_model import load_model_config
from ..data.coco import CocoDetection
from ..data.images import RESIZE_MODES, ResizeMode, list_images, load_image
from ..deploy.accuracy import DEFAULT_MAX_AP_DROP, validation_set
from ..deploy.backend import TorchBackend
from ..deploy.benchmark import time_backend
from ..deploy.metadata import ModelMetadata
from ..deploy.onnx import OnnxRuntimeBackend, check_onnx_model, export_onnx, validate_opset
from ..deploy.openvino import OpenVINOBackend, export_openvino
from ..deploy.pipeline import check_inputs, image_ids_from_annotations, run_inference
from ..deploy.quantize import (
    CALIBRATION_IMAGES,
    INT8_PRESETS,
    CalibrationSet,
    calibration_set,
    export_int8,
    require_nncf,
)
from ..deploy.runtime import BACKENDS, BackendDetector, open_backend, preprocess
from ..deploy.tensorrt import TensorRTBackend, build_engine
from ..deploy.verify import check_images, verify_backend
from ..deploy.wrapper import load_deploy_model, model_from_checkpoint
from ..drawing import DRAW_STYLES
from ..engine.checkpoint import infer_model_size
from ..memory import keep_freed_memory
from ..model.dfine import DFINE as DFINEModel
from ..model.summary import summarize
from ..optional import MissingDependencyError
from ..predictor import RandomWeightsWarning
from ..threads import apply_threads, plan_threads
from .arguments import number_in, run_reporting_errors, score_threshold

__all__ = [
    "add_backend_arguments",
    "add_predict_output_arguments",
    "add_export_arguments",
    "add_export_commands",
    "export_onnx_main",
    "get_info_main",
    "inference_main",
    "run_backend_predict",
    "run_export",
    "tool_main",
    "trt_benchmark_main",
    "user_errors",
]

FORMATS = ("onnx", "openvino", "tensorrt", "hf")
_MODEL_SUFFIXES = (".onnx", ".xml", ".engine", ".trt", ".plan", ".pth", ".pt")  # replaced by each format's own
_FP16_SCORE_TOL = 2e-2  # --check of an fp16 TensorRT engine: half precision moves scores by ~1e-3..1e-2
_FP16_BOX_TOL_FRACTION = 1e-2


def user_errors(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Report a missing optional package like other user errors (``dfine`` prints ValueError as one line)."""

    @functools.wraps(run)
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except MissingDependencyError as err:
            raise ValueError(str(err)) from None

    return wrapped


def tool_main(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int], argv) -> int:
    """Parse, run, and print a user error as one line ``PROG: error: ...`` (exit status 2)."""
    args = parser.parse_args(argv)
    return run_reporting_errors(parser.prog, lambda: user_errors(run)(args))


def _load_model(config: Path | None, checkpoint: str | None, size: str | None, updates: list[str] | None):
    """The deploy module and metadata; random weights (no checkpoint) get one loud warning line."""
    if checkpoint is None:
        print("WARNING: no checkpoint (-r) given: the model has RANDOM weights (fine for timing only)", file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)  # said above, once
        return load_deploy_model(config, checkpoint, size=size, updates=updates)


# ------------------------------------------------------------------------------------------ export


def add_export_arguments(
    parser: argparse.ArgumentParser, formats: Sequence[str] = ("onnx",)
) -> argparse.ArgumentParser:
    """The official ``export_onnx.py`` flags (``-c -r --check --simplify --opset``) and ours."""
    parser.add_argument("-c", "--config", type=Path, help="official-style YAML config of the model")
    parser.add_argument(
        "-r", "--resume", help="weights: checkpoint, URL or zoo name (dfine info --weights); without it: RANDOM weights"
    )
    parser.add_argument(
        "--size", type=str.lower, choices=available_sizes(), help="model size without a config (default: from -r)"
    )
    parser.add_argument("-u", "--update", nargs="+", default=[], metavar="KEY=VALUE", help="override config values")
    parser.add_argument(
        "--format", nargs="+", choices=FORMATS, default=list(formats), help="what to write (default: %(default)s)"
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        help="output file (its suffix is replaced per format); default: beside the checkpoint, same stem",
    )
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset, 17 or newer (default 17)")
    parser.add_argument("--batch-size", type=int, help="export a static batch of this size (default: dynamic batch)")
    parser.add_argument("--exporter", choices=("auto", "dynamo", "legacy"), default="auto", help="torch ONNX exporter")
    parser.add_argument(
        "--simplify",
        nargs="?",
        const="auto",
        default="auto",
        choices=("auto", "onnxslim", "onnxsim", "none"),
        help="simplify the ONNX graph (default auto: onnxslim, else onnxsim)",
    )
    parser.add_argument("--check", action="store_true", help="ONNX checker + compare each runtime with PyTorch")
    parser.add_argument("--check-images", nargs="+", type=Path, help="images for --check (default: generated scenes)")
    parser.add_argument("--fp16", action="store_true", help="TensorRT: fp16 engine; OpenVINO: fp16 weights")
    parser.add_argument("--max-batch", type=int, default=32, help="TensorRT: largest batch of a dynamic engine")
    parser.add_argument("--workspace", type=float, default=4.0, help="TensorRT: builder workspace in GiB")
    int8 = parser.add_argument_group("INT8 (OpenVINO, NNCF post-training quantization; pip install dfine[int8])")
    int8.add_argument("--int8", action="store_true", help="also write an INT8 OpenVINO model, STEM_int8.xml")
    int8.add_argument(
        "--calibration",
        type=Path,
        help="calibration images: a dataset (its train split), a folder of images or a text file listing them "
        "(default: generated scenes, which suit only the shapes demo)",
    )
    int8.add_argument(
        "--calibration-images",
        type=number_in(1, whole=True, meaning="(calibration images)"),
        default=CALIBRATION_IMAGES,
        help="at most this many calibration images, a fixed random choice (default %(default)s)",
    )
    int8.add_argument(
        "--int8-preset",
        choices=INT8_PRESETS,
        default=INT8_PRESETS[0],
        help="NNCF preset: mixed (asymmetric activations; measured 0.3 AP point closer to fp32 at the same speed) "
        "or performance (symmetric); default %(default)s",
    )
    int8.add_argument(
        "--data",
        type=Path,
        help="with --check: the dataset whose --split scores fp32 vs INT8 (default: --calibration if a dataset)",
    )
    int8.add_argument("--split", default="val", help="with --check: the split of --data to score (default val)")
    int8.add_argument(
        "--max-ap-drop",
        type=number_in(0.0, 100.0, "AP points"),
        default=DEFAULT_MAX_AP_DROP,
        help="with --check: refuse an INT8 model losing more AP points than this (default %(default)s)",
    )
    return parser


def _output_base(args: argparse.Namespace) -> Path:
    """``dir/stem`` that each format adds its suffix to: ``--output``, else the checkpoint's, else ``model``."""
    if args.output is not None:
        path = args.output
    elif args.resume is not None and Path(args.resume).exists():
        path = Path(args.resume)
    elif args.resume is not None:  # a URL or zoo name: its file name, in the working folder
        path = Path(args.resume.rstrip("/").rsplit("/", 1)[-1])
    else:
        path = Path("model")
    return path.with_suffix("") if path.suffix.lower() in _MODEL_SUFFIXES else path


def _with_suffix(base: Path, suffix: str) -> Path:
    return base.with_name(base.name + suffix)


def _int8_inputs(args: argparse.Namespace) -> tuple[CalibrationSet | None, CocoDetection | None]:
    """``--int8``'s calibration images and (with ``--check``) validation set, or their errors before the export."""
    int8_only = [flag for flag, value in (("--calibration", args.calibration), ("--data", args.data)) if value]
    if not args.int8:
        if int8_only:
            raise ValueError(f"{' and '.join(int8_only)} belong to --int8; add --int8 --format openvino")
        return None, None
    if "openvino" not in args.format:
        raise ValueError("--int8 quantizes the OpenVINO model: add openvino to --format (e.g. --format onnx openvino)")
    require_nncf()
    calibration = calibration_set(args.calibration, args.calibration_images)
    if not args.check:
        return calibration, None
    data = args.data or calibration.dataset  # a dataset: calibrated on its train split, scored on its --split
    if data is None:
        raise ValueError(
            "--int8 --check scores fp32 and INT8 on a validation set: pass --data DATASET (a folder as dfine val "
            "takes; its --split, default val, is scored)"
        )
    return calibration, validation_set(data, args.split)


def run_export(args: argparse.Namespace) -> int:
    """Export to each ``--format`` (ONNX first: the others are built from it); ``--check`` verifies each."""
    validate_opset(args.opset)  # before the (slow) model build
    calibration, check_data = _int8_inputs(args)
    model, metadata = _load_model(args.config, args.resume, args.size, args.update)
    base = _output_base(args)
    if "hf" in args.format:
        from ..hub.hf import save_hf_checkpoint

        if args.resume is None:
            raise ValueError("--format hf writes trained weights: pass them with -r CHECKPOINT")
        train_model, info = model_from_checkpoint(args.resume, args.config, args.size, args.update)
        folder = save_hf_checkpoint(train_model, info.class_names, _with_suffix(base, "_hf"))
        print(f"Hugging Face: {folder} (config.json + model.safetensors; DFineForObjectDetection.from_pretrained)")
        if args.format == ["hf"]:
            return 0
    result = export_onnx(
        model,
        _with_suffix(base, ".onnx"),
        metadata,
        opset=args.opset,
        batch_size=args.batch_size,
        exporter=args.exporter,
        simplify=args.simplify,
    )
    batch = f"static batch {result.batch_size}" if result.batch_size else "dynamic batch"
    simplified = f"simplified with {result.simplifier}" if result.simplifier else "not simplified"
    print(
        f"ONNX: {result.path} (opset {result.opset}, {result.exporter} exporter, {batch}, {simplified}, "
        f"{result.seconds:.1f} s)"
    )
    reference = images = None
    if args.check:
        check_onnx_model(result.path)
        reference, images = TorchBackend(model, metadata, "cpu"), check_images(args.check_images)
        diff = verify_backend(OnnxRuntimeBackend(result.path), reference, images)
        print(f"check: ONNX checker passed; onnxruntime vs PyTorch on {len(images)} images: {diff.describe()}")
    if "openvino" in args.format:
        xml = export_openvino(result.path, _with_suffix(base, ".xml"), metadata, fp16_weights=args.fp16)
        print(f"OpenVINO IR: {xml} (+ {xml.with_suffix('.bin').name})")
        if args.check:
            diff = verify_backend(OpenVINOBackend(xml), reference, images)
            print(f"check: OpenVINO vs PyTorch: {diff.describe()}")
        if calibration is not None:
            _export_int8(xml, metadata, calibration, check_data, args.max_ap_drop, args.int8_preset)
    if "tensorrt" in args.format:
        engine = build_engine(
            result.path,
            _with_suffix(base, ".engine"),
            metadata,
            fp16=args.fp16,
            workspace_gib=args.workspace,
            max_batch=args.max_batch,
        )
        print(f"TensorRT engine: {engine}{' (fp16)' if args.fp16 else ''}")
        if args.check:
            tolerances = dict(score_tol=_FP16_SCORE_TOL, box_tol_fraction=_FP16_BOX_TOL_FRACTION) if args.fp16 else {}
            diff = verify_backend(TensorRTBackend(engine), reference, images, **tolerances)
            print(f"check: TensorRT vs PyTorch: {diff.describe()}")
    return 0


def _export_int8(
    xml: Path,
    metadata: ModelMetadata,
    calibration: CalibrationSet,
    check_data: CocoDetection | None,
    max_ap_drop: float,
    preset: str,
) -> None:
    print(f"OpenVINO INT8: quantizing with NNCF ({preset}) on {calibration.description} ...")
    result = export_int8(xml, metadata, calibration, check_data=check_data, max_ap_drop=max_ap_drop, preset=preset)
    print(f"OpenVINO INT8: {result.path} (+ {result.path.with_suffix('.bin').name}; {result.seconds:.0f} s)")
    if result.check is None:
        print("OpenVINO INT8: accuracy not measured; add --check --data DATASET to compare its AP with fp32")
    else:
        print(f"check: INT8 vs fp32 on {check_data.source}: {result.check.describe()}")


def add_export_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``dfine export`` on the ``dfine`` sub-command parser."""
    export = subparsers.add_parser(
        "export",
        help="export to ONNX / OpenVINO / TensorRT (-c CONFIG -r CKPT)",
        description="Export D-FINE (deployed model + post-processor) to ONNX, and optionally OpenVINO / TensorRT.",
    )
    add_export_arguments(export)
    export.set_defaults(run=user_errors(run_export))


def export_onnx_main(argv: Sequence[str] | None = None) -> int:
    """``tools/deployment/export_onnx.py``: the official command line, ``--format`` defaulting to onnx."""
    description = "Export D-FINE (deployed model + post-processor) to ONNX, and optionally OpenVINO / TensorRT."
    parser = add_export_arguments(argparse.ArgumentParser(prog="export_onnx.py", description=description))
    return tool_main(parser, run_export, argv)


# --------------------------------------------------------------------------------------- inference


def add_backend_arguments(parser: argparse.ArgumentParser, compile_flag: bool = False) -> argparse.ArgumentParser:
    """``--backend`` and ``--threads`` (and with ``compile_flag`` ``--compile``) for ``dfine predict`` (``--weights``
    names the model file)."""
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="torch",
        help="runtime; --weights is then the .pth, .onnx, .xml or .engine file (default torch)",
    )
    parser.add_argument(
        "--threads", type=int, help="CPU threads (default: the usable cores; torch: or OMP_NUM_THREADS)"
    )
    if not compile_flag:
        return parser
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch: torch.compile the model first (~40 s on 2 cores; pays off over a few hundred images)",
    )
    return parser


def add_predict_output_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--resize`` and ``--draw-style`` of ``dfine predict``."""
    parser.add_argument(
        "--resize",
        choices=RESIZE_MODES,
        default="squash",
        help="squash (the official resize, default) or letterbox (aspect ratio kept, boxes mapped back)",
    )
    parser.add_argument(
        "--draw-style",
        choices=DRAW_STYLES,
        default="auto",
        help="drawer of the annotated copies: auto (supervision's when installed), dfine or supervision",
    )
    return parser


def _run_pipeline(
    backend_name: str,
    model_file: str | Path | None,
    sources: Sequence[str],
    out_dir: Path,
    *,
    config: Path | None = None,
    size: str | None = None,
    device: str | None = None,
    threads: int | None = None,
    conf: float = 0.25,
    batch_size: int = 8,
    image_size: int | None = None,
    ann_file: Path | None = None,
    fix: str | None = None,
    resize: ResizeMode = "squash",
    draw_style: str = "auto",
    compile_model: bool = False,
) -> int:
    if compile_model and backend_name != "torch":
        raise ValueError(f"--compile applies to --backend torch; the {backend_name} runtime optimizes its own graph")
    check_inputs(sources, out_dir)  # a missing or empty input fails before the (slow) model load
    if backend_name == "torch" and model_file is None:
        print("WARNING: no checkpoint given: RANDOM weights, detections are meaningless", file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        backend = open_backend(
            backend_name, model_file, config=config, size=size, device=device, threads=threads, fix=fix
        )
    if backend_name == "torch":  # said once the model loaded, so a refused model stays a one-line error
        plan = plan_threads(requested=threads, adapt_to_load=True)
        apply_threads(plan)
        print(plan.describe(), file=sys.stderr)
        if backend.device.type == "cpu":
            print(keep_freed_memory().describe(), file=sys.stderr)
    if compile_model:
        seconds = backend.compile(image_size or backend.image_size, batch_size)
        print(f"torch.compile: {seconds:.0f} s (batches of {batch_size} at {image_size or backend.image_size} px)")
    detector = BackendDetector(backend)
    image_ids = image_ids_from_annotations(ann_file) if ann_file is not None else None
    run = run_inference(
        detector,
        sources,
        out_dir,
        conf_threshold=conf,
        batch_size=batch_size,
        image_size=image_size,
        image_ids=image_ids,
        log=tqdm.write,  # per-file lines above the progress bar
        resize=resize,
        draw_style=draw_style,
    )
    what = f"{run.images} image(s)" + (f" and {run.frames} video frame(s)" if run.frames else "")
    print(f"{backend.name}: {what}, {run.detections} detections -> {run.out_dir} ({run.results_file.name})")
    return 0


PREDICT_FIX = (
    "pass --size if it is one of n, s, m, l, x; a custom architecture predicts after "
    "'dfine export -c CONFIG -r CHECKPOINT' with --backend onnx"
)


def run_backend_predict(args: argparse.Namespace) -> int:
    """``dfine predict --backend ...``: images, folders and videos through any backend."""
    if getattr(args, "demo", False):
        raise ValueError("--demo runs with --backend torch; pass --source IMAGES for other backends")
    if args.backend != "torch" and args.weights is None:
        raise ValueError(f"--backend {args.backend} needs the exported model file: --weights MODEL_FILE")
    return user_errors(
        lambda a: _run_pipeline(
            a.backend,
            a.weights,
            a.source,
            a.out,
            size=a.size,
            device=a.device,
            threads=a.threads,
            conf=a.conf,
            batch_size=a.batch_size,
            image_size=a.image_size,
            ann_file=getattr(a, "ann_file", None),
            fix=PREDICT_FIX,
            resize=a.resize,
            draw_style=a.draw_style,
            compile_model=getattr(a, "compile", False),
        )
    )(args)


_TOOL_MODEL_FLAGS = {
    "onnx": (("--onnx-file", "--onnx"), "exported .onnx file"),
    "openvino": (("--ov-file", "--ov_model"), "OpenVINO IR (.xml) or .onnx file"),
    "tensorrt": (("--trt-file", "--engine"), "TensorRT engine (.engine / .trt)"),
}


def _inference_parser(backend: str, prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=f"D-FINE inference with {backend}: annotated images/videos")
    if backend == "torch":
        parser.add_argument("-c", "--config", type=Path, help="YAML config (default: size inferred from -r)")
        parser.add_argument("-r", "--resume", required=True, help="weights: checkpoint (.pth), URL or zoo name")
    else:
        flags, what = _TOOL_MODEL_FLAGS[backend]
        parser.add_argument(*flags, dest="model_file", type=Path, required=True, help=what)
    parser.add_argument(
        "-i",
        "--im-file",
        "--image",
        "--input",
        dest="inputs",
        nargs="+",
        required=True,
        help="image(s), folder(s), video(s)",
    )
    default_device = {"torch": None, "onnx": "cpu", "openvino": "CPU", "tensorrt": "cuda"}[backend]
    parser.add_argument("-d", "--device", default=default_device, help=f"device (default: {default_device or 'auto'})")
    parser.add_argument("-o", "--output", type=Path, help=f"output folder (default: ./{backend}_results)")
    parser.add_argument("--conf", type=score_threshold, default=0.25, help="score threshold (default 0.25)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per call (default 4)")
    if backend in ("onnx", "openvino"):
        parser.add_argument("--threads", type=int, help="CPU threads (default: all)")
    return parser


def inference_main(backend: str, argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """``tools/inference/{torch,onnx,openvino,trt}_inf.py``: the seed README's flags, one pipeline."""
    parser = _inference_parser(backend, prog or f"{backend}_inf.py")

    def run(args: argparse.Namespace) -> int:
        return _run_pipeline(
            backend,
            args.resume if backend == "torch" else args.model_file,
            args.inputs,
            args.output or Path(f"{backend}_results"),
            config=getattr(args, "config", None),
            device=args.device,
            threads=getattr(args, "threads", None),
            conf=args.conf,
            batch_size=args.batch_size,
        )

    return tool_main(parser, run, argv)


# ------------------------------------------------------------------------------------- benchmarks


def get_info_main(argv: Sequence[str] | None = None) -> int:
    """``tools/benchmark/get_info.py -c CONFIG``: parameters, MACs and FLOPs of the deployed model."""
    parser = argparse.ArgumentParser(prog="get_info.py", description="D-FINE parameters, MACs and FLOPs (offline)")
    parser.add_argument("-c", "--config", type=Path, required=True, help="official-style YAML config")
    parser.add_argument("--image-size", type=int, default=640, help="input side (default 640)")

    def run(args: argparse.Namespace) -> int:
        if args.image_size <= 0 or args.image_size % 32:
            raise ValueError(f"--image-size must be a positive multiple of 32, got {args.image_size}")
        cfg = load_model_config(args.config)
        model = DFINEModel.from_config(cfg)  # random init: no backbone download (pretrained is ignored)
        summary = summarize(model, args.image_size)
        size = infer_model_size(model.state_dict())
        name = f"D-FINE-{size.upper()}" if size else "D-FINE"
        side = args.image_size
        print(f"{args.config}: {name}, HGNetv2-{cfg.backbone.name}, {cfg.num_classes} classes, 1x3x{side}x{side}")
        params = summary.deploy_params
        print(f"  Params: {params / 1e6:.3f} M ({params:,} deployed; {summary.params:,} in the train layout)")
        print(f"  MACs:   {summary.gflops / 2:.3f} G")
        print(f"  FLOPs:  {summary.gflops:.3f} G (2 per multiply-add; grid_sample and elementwise ops not counted)")
        return 0

    return tool_main(parser, run, argv)


def _engines(path: Path) -> list[Path]:
    if path.is_dir():
        engines = sorted(p for p in path.iterdir() if p.suffix.lower() in (".engine", ".trt", ".plan"))
        if not engines:
            raise ValueError(f"no .engine / .trt files in {path}")
        return engines
    if not path.is_file():
        raise FileNotFoundError(f"engine not found: {path}")
    return [path]


def trt_benchmark_main(argv: Sequence[str] | None = None) -> int:
    """``tools/benchmark/trt_benchmark.py --COCO_dir DIR --engine_dir ENGINE``: TensorRT latency on real images."""
    parser = argparse.ArgumentParser(prog="trt_benchmark.py", description="TensorRT latency over real images")
    parser.add_argument("--COCO_dir", "--coco-dir", dest="coco_dir", type=Path, required=True, help="folder of images")
    parser.add_argument("--engine_dir", "--engine", dest="engine", type=Path, required=True, help="engine or folder")
    parser.add_argument("--num-images", type=int, default=1000, help="images timed, one call each (default 1000)")
    parser.add_argument("--warmup", type=int, default=100, help="untimed calls first (default 100)")
    parser.add_argument("--batch-size", type=int, default=1, help="images per call (default 1)")
    parser.add_argument("-d", "--device", default="cuda", help="CUDA device (default cuda)")

    def run(args: argparse.Namespace) -> int:
        engines = _engines(args.engine)
        files = list_images(args.coco_dir)[: args.num_images * args.batch_size]
        results = []
        for engine in engines:
            backend = TensorRTBackend(engine, args.device)
            groups = [files[i : i + args.batch_size] for i in range(0, len(files), args.batch_size)]
            batches = [preprocess([load_image(f) for f in group], backend.image_size) for group in groups]
            batches = [b for b in batches if len(b[0]) == args.batch_size]
            latency = time_backend(backend, batches, warmup=args.warmup)
            results.append((engine, latency))
            print(
                f"{engine}: median {latency.median:.2f} ms, mean {latency.mean:.2f} ms, p90 {latency.p90:.2f} ms per "
                f"batch of {latency.batch_size} over {latency.runs} batches ({latency.images_per_second:.1f} img/s; "
                "host<->device copies included)"
            )
        for engine, latency in sorted(results, key=lambda item: item[1].median):
            print(f"Engine: {engine}, Latency: {latency.median:.2f} ms")
        return 0

    return tool_main(parser, run, argv)

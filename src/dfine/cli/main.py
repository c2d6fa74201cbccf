"""The ``dfine`` command.

``dfine info``: parameters (train and deploy layout) and GFLOPs of one size, all sizes, or an
official-style YAML config. ``dfine predict``: annotated images and a COCO-style
``predictions.json`` for an image, a folder, or a generated demo image.

Mistakes in the input (a missing file, an unknown size, an empty folder...) end with one line
``dfine: error: ...`` on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import NoReturn

from PIL import Image, ImageDraw

from ..config.presets import available_sizes, model_config
from ..config.yaml_model import load_model_config
from ..engine.checkpoint import infer_model_size
from ..hub.zoo import weights_table
from ..model.dfine import DFINE as DFINEModel
from ..model.summary import ModelSummary, summarize
from ..predictor import DFINE, RandomWeightsWarning
from .arguments import run_reporting_errors, score_threshold
from .export import add_backend_arguments, add_export_commands, add_predict_output_arguments, run_backend_predict
from .track import add_track_command
from .visualize import add_visualize_command

__all__ = ["main"]

_DEMO_NAME = "demo.jpg"  # the generated image of --demo, and its annotated copy


class _UsageError(ValueError):
    """A command-line mistake found by argparse."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse would print the usage and exit; main() prints one line and returns 2 instead
        raise _UsageError(f"{message} (see '{self.prog} --help')")


def _build_parser() -> argparse.ArgumentParser:
    from .data import add_data_commands
    from .train import add_train_arguments, run_train

    parser = _Parser(prog="dfine", description="D-FINE real-time object detector.")
    parser.add_argument("--version", action="version", version=f"dfine {version('dfine')}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="{info,predict,track,train,val,data,export,visualize}"
    )
    sizes = available_sizes()

    info = commands.add_parser("info", help="parameters and GFLOPs of a model size or config")
    what = info.add_mutually_exclusive_group(required=True)
    what.add_argument("--size", type=str.lower, choices=[*sizes, "all"], help="model size, or 'all'")
    what.add_argument("-c", "--config", type=Path, help="official-style D-FINE YAML config")
    what.add_argument("--weights", action="store_true", help="the pretrained weights by name (the zoo)")
    info.add_argument("--image-size", type=int, default=640, help="input side for GFLOPs (default 640)")
    info.set_defaults(run=_run_info)

    predict = commands.add_parser("predict", help="detect objects, write annotated images + predictions.json")
    predict.add_argument(
        "--weights",
        help="checkpoint (.pth), HF folder, URL or zoo name (dfine info --weights); or the exported file of "
        "--backend; without it: RANDOM weights",
    )
    predict.add_argument("--size", type=str.lower, choices=sizes, help="model size (default: inferred from --weights)")
    source = predict.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--source", nargs="+", help="image/video files, folders, glob patterns ('shots/*.jpg') and image URLs"
    )
    source.add_argument("--demo", action="store_true", help="run on a generated image (no download)")
    predict.add_argument("--out", type=Path, required=True, help="output folder")
    predict.add_argument(
        "--conf",
        "--conf-threshold",
        dest="conf",
        type=score_threshold,
        default=0.25,
        help="score threshold, conf_threshold in the Python API (default 0.25)",
    )
    predict.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda if available, else cpu)")
    predict.add_argument(
        "--image-size", type=int, default=None, help="model input side (default: the model's, 640 for official)"
    )
    predict.add_argument("--batch-size", type=int, default=4, help="images per forward pass (default 4)")
    predict.add_argument(
        "--ann-file", type=Path, help="COCO annotations of the images: predictions.json then uses their image ids"
    )
    add_backend_arguments(predict, compile_flag=True)
    add_predict_output_arguments(predict)
    predict.set_defaults(run=_run_predict)

    train = add_train_arguments(
        commands.add_parser("train", help="train: -c CONFIG (as train.py), or --data DATASET --model W"), data=True
    )
    train.set_defaults(run=lambda args: run_train(args))
    val = add_train_arguments(
        commands.add_parser("val", help="evaluate: -c CONFIG -r CKPT, or --data DATASET --weights CKPT"), data=True
    )
    val.set_defaults(run=lambda args: run_train(args, test_only=True))
    add_data_commands(commands)
    add_export_commands(commands)
    add_visualize_command(commands)
    add_track_command(commands)
    return parser


def _summary_lines(title: str, summary: ModelSummary) -> list[str]:
    side = summary.image_size
    return [
        title,
        f"  parameters: {summary.params:,} (train), {summary.deploy_params:,} (deploy)",
        f"  GFLOPs:     {summary.gflops:.1f} at {side}x{side} (deployed, batch 1)",
    ]


def _run_info(args: argparse.Namespace) -> int:
    if args.weights:
        print(weights_table())
        return 0
    if args.image_size <= 0 or args.image_size % 32:
        raise ValueError(f"--image-size must be a positive multiple of 32, got {args.image_size}")
    if args.config is not None:
        cfg = load_model_config(args.config)
        model = DFINEModel.from_config(cfg)
        size = infer_model_size(model.state_dict())
        layout = f"D-FINE-{size.upper()} layout" if size else "no preset layout"
        title = f"{args.config}: {layout}, HGNetv2-{cfg.backbone.name}, {cfg.num_classes} classes"
        print("\n".join(_summary_lines(title, summarize(model, args.image_size))))
        return 0
    if args.size != "all":
        cfg = model_config(args.size)
        title = f"D-FINE-{args.size.upper()} (HGNetv2-{cfg.backbone.name}, {cfg.num_classes} classes)"
        print("\n".join(_summary_lines(title, summarize(DFINEModel.from_config(cfg), args.image_size))))
        return 0
    side = args.image_size
    header = f"{'size':<6}{'backbone':<10}{'params (train)':>16}{'params (deploy)':>17}{f'GFLOPs @{side}':>14}"
    print(header)
    for size in available_sizes():
        cfg = model_config(size)
        summary = summarize(DFINEModel.from_config(cfg), side)
        print(
            f"{size.upper():<6}{cfg.backbone.name:<10}{summary.params:>16,}{summary.deploy_params:>17,}"
            f"{summary.gflops:>14.1f}"
        )
    return 0


def _demo_image(width: int = 640, height: int = 480) -> Image.Image:
    """A generated scene (sky, road, a car-like shape, a house): the input of ``--demo``."""
    image = Image.new("RGB", (width, height), (135, 190, 235))
    draw = ImageDraw.Draw(image)
    draw.ellipse((520, 40, 590, 110), fill=(250, 220, 80))  # sun
    draw.rectangle((0, 330, width, height), fill=(85, 85, 90))  # road
    draw.rectangle((360, 150, 560, 330), fill=(190, 150, 110))  # house
    draw.polygon([(345, 150), (460, 80), (575, 150)], fill=(150, 50, 40))  # roof
    draw.rectangle((440, 250, 480, 330), fill=(90, 60, 40))  # door
    draw.rectangle((80, 300, 300, 370), fill=(200, 30, 40))  # car body
    draw.rectangle((130, 255, 250, 305), fill=(170, 200, 230))  # car windows
    for x in (125, 255):
        draw.ellipse((x - 28, 350, x + 28, 406), fill=(20, 20, 20))  # wheels
    return image


def _load_detector(args: argparse.Namespace) -> DFINE:
    if args.weights is not None:
        return DFINE.from_pretrained(args.weights, size=args.size, device=args.device)
    if args.size is None:
        raise ValueError("pass --weights CHECKPOINT, or --size to run a model with random weights")
    print(
        f"WARNING: no --weights given: D-FINE-{args.size.upper()} runs with RANDOM weights, so its "
        "detections are meaningless (a smoke test only); pass --weights dfine_<size>_coco.pth",
        file=sys.stderr,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)  # said above, once and loudly
        return DFINE(args.size, device=args.device)


EXPORTED_BACKEND = {".onnx": "onnx", ".xml": "openvino", ".engine": "tensorrt"}  # model file suffix -> --backend


def _run_predict(args: argparse.Namespace) -> int:
    exported = EXPORTED_BACKEND.get(Path(args.weights).suffix.lower()) if args.weights else None
    if args.backend == "torch" and exported:
        raise ValueError(f"{args.weights} is an exported model, not PyTorch weights: add --backend {exported}")
    if not args.demo:  # images, folders and videos: the one pipeline of every backend
        return run_backend_predict(args)
    if args.backend != "torch":
        raise ValueError("--demo runs with --backend torch; pass --source IMAGES for other backends")
    detector = _load_detector(args)
    (prediction,) = detector.predict(
        _demo_image(), conf_threshold=args.conf, image_size=args.image_size, resize=args.resize
    )
    out_dir = args.out.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    annotated = prediction.save(out_dir / _DEMO_NAME, style=args.draw_style)
    records = prediction.to_coco(0, image_file=_DEMO_NAME)
    (out_dir / "predictions.json").write_text(json.dumps(records, indent=1))
    print(f"{_DEMO_NAME}: {len(prediction)} detections -> {annotated}")
    print(f"wrote 1 annotated image and predictions.json ({len(records)} detections) to {out_dir}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``dfine`` command with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = _build_parser()

    def run() -> int:
        args = parser.parse_args(argv)
        return args.run(args)

    return run_reporting_errors("dfine", run)


if __name__ == "__main__":
    sys.exit(main())

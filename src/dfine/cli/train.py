"""``train.py`` / ``dfine train`` / ``dfine val``: the official training command line, and training on a dataset
without a config (``dfine train --data DIR --model dfine-s-coco``, the command line of ``DFINE.train``)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .arguments import run_reporting_errors

__all__ = ["add_train_arguments", "run_train", "main"]

logger = logging.getLogger("dfine.train")


def add_train_arguments(parser: argparse.ArgumentParser, data: bool = False) -> argparse.ArgumentParser:
    """The seed README's flags (``-c -r -t -u --use-amp --seed --test-only``) and ours; with ``data``, the flags of
    training on a dataset without a config (``--data --model --epochs --image-size --batch-size --weights``)."""
    parser.add_argument(
        "-c",
        "--config",
        required=not data,
        help="YAML config (official schema, __include__ allowed)" + ("; or --data" if data else ""),
    )
    if data:
        _add_data_arguments(parser)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-r", "--resume", help="resume a run from its checkpoint (or evaluate it with --test-only)")
    group.add_argument("-t", "--tuning", help="fine-tune from a checkpoint's weights (other class counts allowed)")
    parser.add_argument(
        "-u",
        "--update",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override config values, e.g. -u epoches=12 train_dataloader.total_batch_size=8",
    )
    parser.add_argument("-d", "--device", help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    parser.add_argument(
        "--use-amp",
        action="store_true",
        default=None,
        help="mixed precision: fp16 + GradScaler on CUDA, bf16 autocast on CPU",
    )
    parser.add_argument("--seed", type=int, help="random seed (runs with the same seed are reproducible)")
    parser.add_argument(
        "--threads",
        type=int,
        help="intra-op CPU threads (default: OMP_NUM_THREADS, else the usable cores; see dfine.threads)",
    )
    parser.add_argument("--test-only", action="store_true", help="only evaluate (-r CKPT) on the val set")
    parser.add_argument("--output-dir", help="run folder (default: the config's output_dir)")
    parser.add_argument("--summary-dir", help="tensorboard folder (default: OUTPUT_DIR/summary)")
    return parser


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training on a dataset without a config (DFINE.train)")
    group.add_argument("--data", help="dataset folder (COCO, Roboflow export, YOLO, VOC), YOLO data.yaml or COCO json")
    group.add_argument(
        "--model",
        help="starting weights (zoo name, checkpoint, URL, HF folder), or a size n/s/m/l/x (ImageNet backbone)",
    )
    group.add_argument("--weights", help="dfine val --data: the weights to evaluate (default: --model)")
    group.add_argument("--epochs", type=int, help="epochs (default: from the dataset size)")
    group.add_argument("--image-size", type=int, help="input side, a multiple of 32 (default: the model's)")
    group.add_argument("--batch-size", type=int, default=8, help="images per step (default 8)")
    group.add_argument(
        "--workers", type=int, help="data-loading processes (default: one per usable core but one, at most 4)"
    )
    group.add_argument("--split", default="val", help="dfine val --data: the split to score (val, test, train)")


def _detector(source: str):
    import warnings

    from ..config.presets import MODEL_PRESETS
    from ..predictor import DFINE, RandomWeightsWarning

    if source.lower() in MODEL_PRESETS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RandomWeightsWarning)  # the backbone starts from ImageNet
            return DFINE(source.lower())
    return DFINE.from_pretrained(source)


def run_data(args: argparse.Namespace, test_only: bool) -> int:
    """``dfine train --data`` / ``dfine val --data``: :meth:`dfine.DFINE.train` / :meth:`~dfine.DFINE.val`."""
    from ..config.yaml_config import apply_overrides, load_yaml_config

    if args.tuning:
        raise ValueError("with --data the starting weights are --model (-t belongs to -c runs)")
    resume = args.resume is not None and not test_only  # -r RUN/last.pth continues that run
    if resume and Path(args.resume).name != "last.pth":
        raise ValueError(f"-r {args.resume}: with --data, resume a run from its last.pth (RUN/last.pth)")
    overrides = {}
    if args.config:  # the config wins where it is given; the dataset comes from --data
        overrides = load_yaml_config(args.config)
        for key in ("__include__", "num_classes", "train_dataloader", "val_dataloader", "remap_mscoco_category"):
            overrides.pop(key, None)
    overrides = apply_overrides(overrides, args.update)  # -u wins over both
    if args.use_amp is not None:
        overrides["use_amp"] = args.use_amp
    if test_only:
        source = args.weights or args.model
        if source is None:
            raise ValueError("dfine val --data needs the weights to evaluate: --weights CHECKPOINT")
        metrics = _detector(source).val(args.data, args.split, batch_size=args.batch_size, output_dir=args.output_dir)
        print(f"AP {metrics['AP']:.4f}  AP50 {metrics['AP50']:.4f}  AP75 {metrics['AP75']:.4f}")
        return 0
    detector = _detector(args.model or "n")
    result = detector.train(
        args.data,
        epochs=args.epochs,
        image_size=args.image_size,
        batch_size=args.batch_size,
        device=args.device,
        output_dir=Path(args.resume).parent if resume else args.output_dir,
        resume=resume,
        seed=args.seed if args.seed is not None else 0,
        workers=args.workers,
        threads=args.threads,
        **overrides,
    )
    best = result.best_checkpoint or result.last_checkpoint
    print(f"done: best AP {result.best_ap:.4f} after {result.epochs_run} epochs; weights {best}")
    return 0


def run_train(args: argparse.Namespace, test_only: bool | None = None) -> int:
    """Run training or evaluation; returns a process exit code."""
    if getattr(args, "data", None):
        return run_data(args, bool(test_only or args.test_only))
    if args.config is None:
        raise ValueError("pass -c CONFIG (the official command line) or --data DATASET (training without a config)")
    from ..config.schema import load_train_config
    from ..engine.distributed import cleanup_distributed, is_main_process
    from ..engine.run_log import run_logging
    from ..engine.setup import RunOptions, build_trainer

    if test_only is None:
        test_only = bool(args.test_only)
    if test_only and not args.resume and not args.tuning:
        raise ValueError("--test-only needs the checkpoint to evaluate: add -r CHECKPOINT")
    cfg = load_train_config(args.config, args.update)
    run = RunOptions(
        resume=args.resume or (args.tuning if test_only else None),
        tuning=None if test_only else args.tuning,
        test_only=test_only,
        device=args.device,
        output_dir=args.output_dir or (str(Path(args.resume).parent) if test_only and args.resume else None),
        summary_dir=args.summary_dir,
        use_amp=args.use_amp,
        seed=args.seed,
        threads=args.threads,
    )
    output_dir = run.output_dir or cfg.output_dir
    try:
        with run_logging(None if test_only else output_dir, enabled=is_main_process()):
            trainer, description = build_trainer(cfg, run)
            logger.info(
                "D-FINE %s on %s (x%d): %d train / %d val images, %d classes, %d epochs of batch %d -> %s",
                "evaluation" if test_only else "training", description["device"], description["world_size"],
                description["train_images"], description["val_images"], len(description["classes"]), cfg.epochs,
                cfg.train.total_batch_size, output_dir,
            )  # fmt: skip
            if test_only:
                result = trainer.evaluate()  # writes OUTPUT_DIR/eval/: metrics, curves, predictions.json
                if result is not None:
                    logger.info("evaluation files: %s", trainer.output_dir / "eval")
            else:
                trainer.fit()  # its last line says where the best weights and the report are
    finally:
        cleanup_distributed()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the repository's ``train.py``."""
    parser = add_train_arguments(argparse.ArgumentParser(prog="train.py", description="Train or evaluate D-FINE."))
    args = parser.parse_args(argv)
    return run_reporting_errors(parser.prog, lambda: run_train(args))


if __name__ == "__main__":
    sys.exit(main())

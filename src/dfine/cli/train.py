"""``train.py`` / ``dfine train`` / ``dfine val``: the official training command line."""

from __future__ import annotations

import argparse
import sys

from .arguments import run_reporting_errors

__all__ = ["add_train_arguments", "run_train", "main"]


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The seed README's flags (``-c -r -t -u --use-amp --seed --test-only``) and ours."""
    parser.add_argument("-c", "--config", required=True, help="YAML config (official schema, __include__ allowed)")
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
    parser.add_argument("--test-only", action="store_true", help="only evaluate (-r CKPT) on the val set")
    parser.add_argument("--output-dir", help="run folder (default: the config's output_dir)")
    parser.add_argument("--summary-dir", help="tensorboard folder (default: OUTPUT_DIR/summary)")
    return parser


def run_train(args: argparse.Namespace, test_only: bool | None = None) -> int:
    """Run training or evaluation; returns a process exit code."""
    from ..config.schema import load_train_config
    from ..engine.distributed import cleanup_distributed, is_main_process
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
        output_dir=args.output_dir,
        summary_dir=args.summary_dir,
        use_amp=args.use_amp,
        seed=args.seed,
    )
    try:
        trainer, description = build_trainer(cfg, run)
        if is_main_process():
            print(
                f"D-FINE {'evaluation' if test_only else 'training'} on {description['device']} "
                f"(x{description['world_size']}): {description['train_images']} train / "
                f"{description['val_images']} val images, {len(description['classes'])} classes"
            )
        if test_only:
            result = trainer.evaluate()  # writes OUTPUT_DIR/eval/: metrics, curves, predictions.json
            if result is not None and is_main_process():
                print(f"evaluation files: {trainer.output_dir / 'eval'}")
        else:
            summary = trainer.fit()
            if is_main_process():
                print(f"done: {summary}")
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

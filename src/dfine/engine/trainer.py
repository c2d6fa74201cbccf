"""The training loop: AMP, gradient clipping and accumulation, EMA, warm-up, the two-stage
augmentation policy, evaluation, best/last checkpoints and exact resume.

The trainer receives built components; :mod:`dfine.engine.setup` builds them from a config.
"""

from __future__ import annotations

import errno
import json
import logging
import random
import shutil
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.transforms import images_to_device
from ..model.outputs import DFINEOutputs
from .checkpoint import (
    describe_difference,
    read_checkpoint,
    remove_orphaned_temporaries,
    save_atomic,
    save_text_atomic,
)
from .distributed import get_rank, is_main_process, reduce_mean_dict
from .ema import ModelEMA, unwrap_model
from .eval_report import MATPLOTLIB_MISSING, confusion_matrix, plotting_available, save_eval_report, save_results_plot
from .evaluate import CocoEvaluator, EvalResult
from .optim import LinearWarmup
from .run_log import metrics_table

__all__ = ["Trainer", "TrainerOptions", "NonFiniteLossError", "seed_everything"]

LAST_REPORT = "eval/last"  # the last epoch's evaluation report; eval/ holds the best checkpoint's

logger = logging.getLogger(__name__)


# full training states a run folder holds (best.pth is weights only)
RESUMABLE = ("last.pth", "checkpoint[0-9]*.pth", "best_stg[12].pth")


class TrainingStopped(RuntimeError):
    """A run that cannot go on; the message is one line naming where and what to do (CLI exit status 1)."""


class NonFiniteLossError(TrainingStopped):
    """Training produced a NaN or infinite loss, or a loss that exploded."""


class CheckpointWriteError(TrainingStopped):
    """A checkpoint could not be written (disk full, folder not writable); the previous one is intact."""


EXPLOSION_FACTOR = 1e4  # a loss this many times the running median of the last losses stops the run
EXPLOSION_WINDOW = 100  # losses in that median
EXPLOSION_MIN_STEPS = 20  # losses seen before the check starts


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class TrainerOptions:
    """Loop settings (the official runtime/solver keys).

    Attributes:
        epochs: total epochs (``epoches`` in the official YAML).
        clip_max_norm: gradient-norm clip (0 disables).
        use_amp: mixed precision (fp16 + GradScaler on CUDA, bf16 autocast on CPU).
        grad_accum_steps: optimizer step every N batches (loss divided by N).
        stop_epoch: stage-2 start: strong augmentation off, EMA restarted from the best stage-1 weights.
        ema_restart_decay: EMA decay from ``stop_epoch`` on.
        checkpoint_freq: also keep ``checkpointNNNN.pth`` every N epochs.
        print_freq: log every N iterations.
        seed: base seed; each epoch and rank reseeds from it so resumed runs are exact.
        early_stopping_patience: stop after this many evaluations without AP gain (0 disables).
        eval_freq: evaluate every N epochs (and at the last one).
        channels_last: feed images in channels-last memory layout (give the model the same layout);
            ~20-25 % faster training steps on CPU, same values up to fp32 rounding.
        coco_block_on_console: also print the 12-line COCO block of each evaluation (the official console
            output, which ``train.py`` keeps for scripts that read it); it always goes to ``run.log``.
    """

    epochs: int
    clip_max_norm: float = 0.1
    use_amp: bool = False
    grad_accum_steps: int = 1
    stop_epoch: int | None = None
    ema_restart_decay: float = 0.9999
    checkpoint_freq: int = 12
    print_freq: int = 100
    seed: int = 0
    early_stopping_patience: int = 0
    eval_freq: int = 1
    channels_last: bool = False
    coco_block_on_console: bool = True
    metadata: dict[str, Any] = field(default_factory=dict)


class Trainer:
    """Runs epochs of training and evaluation and owns the checkpoints of one run.

    Args:
        model: the detector (possibly DDP-wrapped), already on ``device``; returns :class:`DFINEOutputs`.
        criterion: ``criterion(outputs, targets) -> dict of weighted loss terms``.
        postprocessor: maps outputs + original sizes to detections for evaluation.
        optimizer: the optimizer.
        lr_scheduler: per-epoch scheduler, stepped once the warm-up has finished (or None).
        warmup: per-iteration linear warm-up (or None).
        iteration_scheduler: a scheduler stepped after every optimizer step (flat-cosine), or None.
        ema: model EMA (or None); evaluation and ``best`` use the EMA weights when present.
        train_loader, val_loader: iterables of ``(images [B,3,H,W], targets)``.
        evaluator: COCO evaluator for ``val_loader`` (or None to skip evaluation).
        device: where batches go.
        output_dir: run folder (checkpoints, ``log.txt``, evaluation files).
        options: loop settings.
        set_epoch: called with the epoch before each epoch (samplers, augmentation policy).
        writer: optional tensorboard ``SummaryWriter``.
    """

    def __init__(
        self,
        model: nn.Module,
        criterion: nn.Module,
        postprocessor: nn.Module,
        optimizer: torch.optim.Optimizer,
        lr_scheduler: Any,
        warmup: LinearWarmup | None,
        ema: ModelEMA | None,
        train_loader: Iterable,
        val_loader: Iterable | None,
        evaluator: CocoEvaluator | None,
        device: torch.device,
        output_dir: str | Path,
        options: TrainerOptions,
        set_epoch: Callable[[int], None] | None = None,
        writer: Any = None,
        iteration_scheduler: Any = None,
    ) -> None:
        self.model = model
        self.criterion = criterion
        self.postprocessor = postprocessor
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.warmup = warmup
        self.iteration_scheduler = iteration_scheduler
        self.ema = ema
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.evaluator = evaluator
        self.device = device
        self.output_dir = Path(output_dir)
        self.options = options
        self.set_epoch = set_epoch
        self.writer = writer
        self.scaler = torch.amp.GradScaler("cuda") if options.use_amp and device.type == "cuda" else None
        self.last_epoch = -1
        self.global_step = 0
        self._recent_losses: deque[float] = deque(maxlen=EXPLOSION_WINDOW)  # for the explosion check
        self.best: dict[str, float] = {"stage1": -1.0, "stage2": -1.0}
        self.best_epoch = -1  # the epoch of best.pth
        self.stale_evaluations = 0
        self.history: list[dict[str, Any]] = []
        self._memory_format = torch.channels_last if options.channels_last else torch.preserve_format

    # ----------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """The official checkpoint layout plus what exact resume and deployment need."""
        state: dict[str, Any] = {
            "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "last_epoch": self.last_epoch,
            "model": unwrap_model(self.model).state_dict(),
            "criterion": {},
            "postprocessor": {},
            "optimizer": self.optimizer.state_dict(),
            "global_step": self.global_step,
            "best": dict(self.best),
            "best_epoch": self.best_epoch,
            "stale_evaluations": self.stale_evaluations,
        }
        if self.lr_scheduler is not None:
            state["lr_scheduler"] = self.lr_scheduler.state_dict()
        if self.iteration_scheduler is not None:
            state["iteration_scheduler"] = self.iteration_scheduler.state_dict()
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        if self.warmup is not None:
            state["lr_warmup_scheduler"] = self.warmup.state_dict()
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        if self.options.metadata:
            state["dfine"] = self.options.metadata
        return state

    def load_state_dict(self, state: dict[str, Any], source: str = "<checkpoint>") -> None:
        """Resume from :meth:`state_dict` output (or an official solver checkpoint)."""
        model = unwrap_model(self.model)
        try:
            model.load_state_dict(state["model"])
        except (KeyError, RuntimeError, AttributeError, TypeError):
            difference = (
                describe_difference(state["model"], model.state_dict())
                if isinstance(state.get("model"), Mapping)
                else "no weights"
            )
            raise ValueError(
                f"{source}: cannot resume: its model does not match this config ({difference}); "
                "resume with the config the run was started with, or use -t to fine-tune from its weights"
            ) from None
        if "optimizer" not in state:  # best.pth / release weights: resuming would restart every schedule silently
            raise ValueError(
                f"{source}: this is a weights-only file (no optimizer, schedules or step count): use -t to fine-tune "
                "from it, or -r last.pth to resume"
            )
        if self.ema is not None:
            if "ema" in state:
                self.ema.load_state_dict(state["ema"])
            else:  # official behaviour: rebuild the EMA from the model
                self.ema.module.load_state_dict(unwrap_model(self.model).state_dict())
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        if self.lr_scheduler is not None and "lr_scheduler" in state:
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        if self.iteration_scheduler is not None and "iteration_scheduler" in state:
            self.iteration_scheduler.load_state_dict(state["iteration_scheduler"])
        if self.warmup is not None and "lr_warmup_scheduler" in state:
            self.warmup.load_state_dict(state["lr_warmup_scheduler"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.last_epoch = int(state.get("last_epoch", -1))
        self.global_step = int(state.get("global_step", 0))
        self.best.update(state.get("best", {}))
        self.best_epoch = int(state.get("best_epoch", -1))
        self.stale_evaluations = int(state.get("stale_evaluations", 0))

    def resume(self, path: str | Path) -> None:
        path = Path(path)
        if not path.exists():
            candidates = [p for pattern in RESUMABLE for p in path.parent.glob(pattern)] if path.parent.is_dir() else []
            newest = max(candidates, key=lambda p: p.stat().st_mtime, default=None)
            hint = f"; the newest resumable file there is {newest}: -r {newest}" if newest else ""
            raise FileNotFoundError(f"cannot resume: {path} does not exist{hint}")
        state = read_checkpoint(path)
        if not isinstance(state, dict) or "model" not in state:
            raise ValueError(f"{path}: not a training checkpoint (no 'model' entry); use -t to fine-tune from weights")
        self.load_state_dict(state, str(path))
        logger.info("resumed from %s: continuing with epoch %d/%d", path, self.last_epoch + 2, self.options.epochs)

    def _save(self, name: str, weights_only: bool = False) -> Path | None:
        if not is_main_process():
            return None
        state = self.state_dict()
        if weights_only:  # deployment file: EMA (or model) weights and metadata only
            weights = state["ema"]["module"] if "ema" in state else state["model"]
            state = {"model": weights, "last_epoch": self.last_epoch, "dfine": state.get("dfine", {})}
        target = self.output_dir / name
        try:
            return save_atomic(state, target)
        except OSError as err:
            last = self.output_dir / "last.pth"
            kept = target if target.exists() else last if last.exists() else None
            reason, fix = _write_failure(err)
            resume = f"resume with -r {last}" if last.exists() else "start the run again"
            raise CheckpointWriteError(
                f"{reason} writing {target}; "
                + (f"the previous checkpoint {kept} is intact; " if kept else "no checkpoint was written yet; ")
                + f"{fix} and {resume}"
            ) from None

    # ------------------------------------------------------------------------------- training
    def _autocast(self):
        if not self.options.use_amp:
            return torch.autocast(device_type=self.device.type, enabled=False)
        dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _exploded(self, loss: float) -> str | None:
        """Why ``loss`` counts as an explosion (> EXPLOSION_FACTOR x the running median), else None."""
        recent = self._recent_losses
        median = statistics.median(recent) if len(recent) >= EXPLOSION_MIN_STEPS else None
        recent.append(loss)
        if median is not None and median > 0 and loss > EXPLOSION_FACTOR * median:
            ratio = loss / median
            return f"loss exploded to {loss:.4g} ({ratio:.0f}x the median {median:.4g} of the last {len(recent) - 1})"
        return None

    def _check_step(self, loss: torch.Tensor, outputs: DFINEOutputs, epoch: int, step: int) -> None:
        """Stop on a non-finite or exploding loss, or non-finite predictions, naming the last good checkpoint."""
        # the criterion maps NaN terms to 0 (official behaviour), so also look at the predictions
        finite_outputs = bool(torch.isfinite(outputs.boxes).all() and torch.isfinite(outputs.logits).all())
        exploded = self._exploded(float(loss.detach())) if finite_outputs and torch.isfinite(loss) else None
        if torch.isfinite(loss) and finite_outputs and not exploded:
            return
        last = self.output_dir / "last.pth"
        what = f"loss became {loss.item()}" if finite_outputs else "the predictions became NaN/inf"
        raise NonFiniteLossError(
            f"{exploded or what} at epoch {epoch}, step {step} (global step {self.global_step}); "
            + (f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was written yet")
            + ". Lower the learning rate, check the data with `dfine data check`, or disable --use-amp."
        )

    def _after_optimizer_step(self) -> None:
        """EMA update, warm-up and per-iteration schedule steps, in the official order."""
        if self.ema is not None:
            self.ema.update(self.model)
        if self.warmup is not None:
            self.warmup.step()
        if self.iteration_scheduler is not None:
            self.iteration_scheduler.step()
        self.global_step += 1

    def train_one_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over ``train_loader``; returns the mean of each loss term and the final LR."""
        self.model.train()
        self.criterion.train()
        accum = max(1, self.options.grad_accum_steps)
        sums: dict[str, float] = {}
        count = 0
        num_batches = _length(self.train_loader)
        progress = _progress(self.train_loader, f"epoch {epoch + 1}/{self.options.epochs}", num_batches)
        self.optimizer.zero_grad(set_to_none=True)
        for step, (images, targets) in enumerate(progress):
            images = images_to_device(images, self.device, self._memory_format)
            targets = [
                {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in t.items()}
                for t in targets
            ]
            with self._autocast():
                outputs = self.model(images, targets=targets)
            with torch.autocast(device_type=self.device.type, enabled=False):
                outputs = _to_float(outputs)
                loss_dict = self.criterion(outputs, targets)
            loss = sum(loss_dict.values())
            self._check_step(loss, outputs, epoch, step)
            scaled = loss / accum
            if self.scaler is not None:
                self.scaler.scale(scaled).backward()
            else:
                scaled.backward()

            stepped = (step + 1) % accum == 0 or (num_batches is not None and step + 1 == num_batches)
            if stepped:
                self._optimizer_step()
                self._after_optimizer_step()

            # terms can differ between ranks (no denoising terms for a batch without boxes): average
            # only the total over ranks, and log the terms of this rank
            for key, value in loss_dict.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach())
            total = float(reduce_mean_dict({"loss": loss.detach()})["loss"])
            sums["loss"] = sums.get("loss", 0.0) + total
            count += 1
            lr = self.optimizer.param_groups[0]["lr"]
            if hasattr(progress, "set_postfix"):
                progress.set_postfix(loss=f"{total:.3f}", lr=f"{lr:.2e}", refresh=False)
            if self.writer is not None and stepped and self.global_step % 10 == 0:  # once per optimizer step
                self.writer.add_scalar("Loss/total", total, self.global_step)
                for j, group in enumerate(self.optimizer.param_groups):
                    self.writer.add_scalar(f"Lr/pg_{j}", group["lr"], self.global_step)
        stats = {k: v / max(count, 1) for k, v in sums.items()}
        stats["lr"] = self.optimizer.param_groups[0]["lr"]
        return stats

    def _optimizer_step(self) -> None:
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        if self.scaler is not None:
            if self.options.clip_max_norm > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(params, self.options.clip_max_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            if self.options.clip_max_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, self.options.clip_max_norm)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    # ----------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, module: nn.Module | None = None, report: str = "eval") -> EvalResult | None:
        """COCO metrics of ``module`` (default: the EMA weights if any, else the model); the report (metrics, curves,
        confusion matrix, detections) goes to ``output_dir / report``."""
        if self.val_loader is None or self.evaluator is None:
            return None
        if module is None:
            module = self.ema.module if self.ema is not None else unwrap_model(self.model)
        module.eval()
        self.evaluator.reset()
        for images, targets in _progress(self.val_loader, "eval", _length(self.val_loader)):
            images = images_to_device(images, self.device, self._memory_format)
            with self._autocast():
                outputs = module(images)
            outputs = _to_float(outputs)
            sizes = torch.stack([t["orig_size"] for t in targets]).to(self.device)
            results = self.postprocessor(outputs, sizes)
            self.evaluator.update([int(t["image_id"]) for t in targets], results)
        self.evaluator.gather()
        result = self.evaluator.compute(verbose=is_main_process() and self.options.coco_block_on_console)
        if is_main_process():
            logger.debug("COCO evaluation:\n%s", result.summary)
            logger.info("%s", metrics_table(result.stats, result.per_class_ap))
            self._write_eval_report(result, self.output_dir / report)
        return result

    def _write_eval_report(self, result: EvalResult, folder: Path) -> None:
        """Metrics, per-class AP, PR curves, confusion matrix and detections under ``eval/``."""
        evaluator = self.evaluator
        names = evaluator.class_names or [str(c) for c in (evaluator.label_to_category or [])]
        category_ids = evaluator.label_to_category or list(range(len(names)))
        confusion = confusion_matrix(evaluator.detections, evaluator.ground_truth, category_ids)
        save_eval_report(result, folder, names, confusion)
        evaluator.write_json(folder / "predictions.json")

    # ------------------------------------------------------------------------------------ fit
    def fit(self) -> dict[str, Any]:
        """Train from ``last_epoch + 1`` to ``epochs``; returns a summary of the run."""
        opts = self.options
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if is_main_process():
            for orphan in remove_orphaned_temporaries(self.output_dir):
                logger.info("removed %s, left by a run killed while writing a checkpoint", orphan)
            self._forget_later_epochs()
        start = time.time()
        if is_main_process() and not plotting_available():
            logger.info("%s", MATPLOTLIB_MISSING)
        stop_epoch = opts.stop_epoch if opts.stop_epoch is not None else opts.epochs
        for epoch in range(self.last_epoch + 1, opts.epochs):
            seed_everything(opts.seed + 1000 * epoch + get_rank())
            if self.set_epoch is not None:
                self.set_epoch(epoch)
            if epoch == stop_epoch and epoch > 0:
                self._start_stage2()

            epoch_start = time.time()
            train_stats = self.train_one_epoch(epoch)
            train_seconds = time.time() - epoch_start
            if self.lr_scheduler is not None and (self.warmup is None or self.warmup.finished()):
                self.lr_scheduler.step()
            self.last_epoch = epoch
            if opts.checkpoint_freq > 0 and (epoch + 1) % opts.checkpoint_freq == 0:
                self._save(f"checkpoint{epoch:04}.pth")

            result = None
            eval_start = time.time()
            if (epoch + 1) % max(1, opts.eval_freq) == 0 or epoch + 1 == opts.epochs:
                result = self.evaluate(report=LAST_REPORT)  # eval/ gets it too when it is the best
            record: dict[str, Any] = {"epoch": epoch, **{f"train_{k}": v for k, v in train_stats.items()}}
            record["time_train_s"] = round(train_seconds, 2)
            record["time_eval_s"] = round(time.time() - eval_start, 2) if result is not None else 0.0
            if result is not None:
                record["test_coco_eval_bbox"] = result.as_list()
            self._log(record)  # before the checkpoints it describes: a kill cannot leave one without its line
            self._plot_results()
            if result is not None:
                self._track_best(epoch, result, stage2=epoch >= stop_epoch)
            self._save("last.pth")
            if opts.early_stopping_patience and self.stale_evaluations >= opts.early_stopping_patience:
                logger.info("early stopping after epoch %d: no AP gain in %d evaluations", epoch + 1,
                            self.stale_evaluations)  # fmt: skip
                break
        summary = {
            "epochs_run": self.last_epoch + 1,
            "best_ap_stage1": self.best["stage1"],
            "best_ap_stage2": self.best["stage2"],
            "best_epoch": self.best_epoch,
            "train_time_s": round(time.time() - start, 1),
            "output_dir": str(self.output_dir),
        }
        if is_main_process():
            (self.output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
            logger.info("%s", _end_line(summary, self.output_dir))
        return summary

    def _start_stage2(self) -> None:
        """At the stop epoch: continue from the best stage-1 weights with a restarted EMA decay."""
        best = self.output_dir / "best_stg1.pth"
        if best.exists():
            state = read_checkpoint(best)
            unwrap_model(self.model).load_state_dict(state["model"])
            if self.ema is not None and "ema" in state:
                self.ema.load_state_dict(state["ema"])
        if self.ema is not None:
            self.ema.restart(self.options.ema_restart_decay)
        logger.info(
            "stage 2 from epoch %d/%d: strong augmentation off, from the best stage-1 weights, EMA decay %.4f",
            self.last_epoch + 2, self.options.epochs, self.options.ema_restart_decay,
        )  # fmt: skip

    def _track_best(self, epoch: int, result: EvalResult, stage2: bool) -> None:
        ap = result.stats["AP"]
        stage = "stage2" if stage2 else "stage1"
        if ap > self.best[stage]:
            self.best[stage] = ap
            self.best_epoch = epoch
            self.stale_evaluations = 0
            self._save("best_stg2.pth" if stage2 else "best_stg1.pth")
            self._save("best.pth", weights_only=True)
            self._keep_best_report()
            logger.info("epoch %d/%d: AP %.4f, the best so far -> %s", epoch + 1, self.options.epochs, ap,
                        self.output_dir / "best.pth")  # fmt: skip
        else:
            self.stale_evaluations += 1
        if self.writer is not None:
            for name, value in result.stats.items():
                self.writer.add_scalar(f"Test/{name}", value, epoch)

    def _keep_best_report(self) -> None:
        """Copy the last evaluation's report (``eval/last/``) to ``eval/``: the report of ``best.pth``."""
        if not is_main_process():
            return
        last = self.output_dir / LAST_REPORT
        for file in last.glob("*") if last.is_dir() else []:
            if file.is_file():
                shutil.copy2(file, self.output_dir / "eval" / file.name)

    def _forget_later_epochs(self) -> None:
        """Drop ``log.txt`` records of epochs after the resumed checkpoint: this run trains them again.

        A run killed between an epoch's log line and its checkpoint leaves such a record behind.
        """
        path = self.output_dir / "log.txt"
        if not path.exists():
            return
        lines = path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if _record_epoch(line) <= self.last_epoch]
        if len(kept) < len(lines):
            save_text_atomic("".join(kept), path)
            logger.info("log.txt: dropped %d record(s) after epoch %d, trained again now", len(lines) - len(kept),
                        self.last_epoch)  # fmt: skip

    def _plot_results(self) -> None:
        """``results.png`` from every record in ``log.txt`` (resumed runs included)."""
        if not is_main_process():
            return
        lines = (self.output_dir / "log.txt").read_text().splitlines()
        records = [json.loads(line) for line in lines if _record_epoch(line) >= 0]
        save_results_plot(records, self.output_dir / "results.png")

    def _log(self, record: dict[str, Any]) -> None:
        if not is_main_process():
            return
        self.history.append(record)
        with (self.output_dir / "log.txt").open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key.startswith("train_") and isinstance(value, float):
                    self.writer.add_scalar(f"Train/{key[6:]}", value, record["epoch"])
            self.writer.flush()  # this epoch's scalars on disk now, not up to flush_secs later


def _record_epoch(line: str) -> int:
    """The epoch of one ``log.txt`` line (-1 for a line that is not a record)."""
    try:
        return int(json.loads(line)["epoch"])
    except (ValueError, KeyError, TypeError):
        return -1


def _write_failure(err: OSError) -> tuple[str, str]:
    """(what happened, what the user can do) for a failed checkpoint write."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on the device" if err.errno == errno.ENOSPC else "disk quota exceeded", "free space"
    if err.errno == errno.EFBIG:
        return "the file-size limit was reached", "raise the limit (ulimit -f) or write to another filesystem"
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return err.strerror or "not writable", "make the run folder writable (or choose another --output-dir)"
    return err.strerror or str(err), "fix the run folder (free space, permissions)"


def _to_float(outputs: Any) -> Any:
    """Cast floating tensors of a (nested) output structure to float32 for the loss / post-processing."""
    if torch.is_tensor(outputs):
        return outputs.float() if outputs.is_floating_point() else outputs
    if is_dataclass(outputs) and not isinstance(outputs, type):  # DFINEOutputs and its heads
        return replace(outputs, **{f.name: _to_float(getattr(outputs, f.name)) for f in fields(outputs) if f.init})
    if isinstance(outputs, dict):
        return {k: _to_float(v) for k, v in outputs.items()}
    if isinstance(outputs, list | tuple):
        return type(outputs)(_to_float(v) for v in outputs)
    return outputs


def _end_line(summary: Mapping[str, Any], output_dir: Path) -> str:
    """The run's last line: best AP and epoch, and where the weights and the report are."""
    best = max(summary["best_ap_stage1"], summary["best_ap_stage2"])
    where = f"{output_dir / 'best.pth'}; report {output_dir / 'eval'}" if best >= 0 else f"{output_dir / 'last.pth'}"
    if (output_dir / "results.png").is_file():
        where += f"; curves {output_dir / 'results.png'}"
    told = f"best AP {best:.4f} at epoch {summary['best_epoch'] + 1}" if best >= 0 else "no evaluation"
    return f"done: {summary['epochs_run']} epochs in {summary['train_time_s']:.0f} s; {told} -> {where}"


def _length(loader: Iterable) -> int | None:
    return len(loader) if hasattr(loader, "__len__") else None


def _progress(loader: Iterable, description: str, total: int | None):
    """A tqdm progress bar on the main process (plain iteration elsewhere or without tqdm)."""
    if not is_main_process():
        return loader
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return loader
    return tqdm(loader, total=total, desc=description, leave=False, mininterval=2.0, dynamic_ncols=True)

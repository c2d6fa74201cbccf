"""Build a training / evaluation run from a :class:`~dfine.config.schema.TrainConfig`.

This is the one place that turns config values into objects: model, criterion, data loaders,
optimizer, schedules, EMA, evaluator and the :class:`~dfine.engine.trainer.Trainer`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from ..config.presets import model_config_from_dict
from ..config.schema import LoaderConfig, TrainConfig
from ..data.coco import CategoryMap, CocoDetection, object_categories, read_coco_json
from ..data.collate import BatchImageCollateFunction, batch_image_collate
from ..data.epoch_random import EpochSeededDataset
from ..data.from_config import build_pipeline, build_schedule
from ..data.transforms import train_transforms, val_transforms
from ..hub.download import hgnetv2_weights
from ..losses.criterion import DFINECriterion
from ..losses.matcher import HungarianMatcher
from ..model.dfine import DFINE
from ..model.fast_paths import use_training_paths
from ..model.hgnetv2 import HGNetv2, load_hgnetv2_pretrained
from ..model.postprocess import PostProcessor
from ..threads import apply_threads, plan_threads
from .checkpoint import CheckpointError, load_checkpoint, read_checkpoint
from .distributed import barrier, get_rank, get_world_size, init_distributed, is_distributed, is_main_process
from .ema import ModelEMA
from .evaluate import CocoEvaluator
from .finetune import load_for_finetuning
from .optim import FlatCosineSchedule, LinearWarmup, build_lr_scheduler, build_optimizer
from .trainer import Trainer, TrainerOptions, seed_everything

__all__ = ["build_trainer", "cpu_has_native_bf16", "load_pretrained_backbone", "RunOptions"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class RunOptions:
    """Command-line choices on top of the config (``-r``, ``-t``, ``--test-only``...)."""

    resume: str | None = None
    tuning: str | None = None
    test_only: bool = False
    device: str | None = None
    output_dir: str | None = None
    summary_dir: str | None = None
    use_amp: bool | None = None
    seed: int | None = None
    threads: int | None = None  # intra-op CPU threads; None: dfine.threads.plan_threads decides
    coco_block_on_console: bool = True  # the official 12-line block per evaluation (train.py keeps it)


@contextlib.contextmanager
def _naming(source: str) -> Iterator[None]:
    """A config value refused while building a part (model, optimizer, schedule) names the config file."""
    try:
        yield
    except ValueError as err:
        if source in str(err):
            raise
        raise ValueError(f"{source}: {err}") from None


def _dataset(cfg: TrainConfig, loader: LoaderConfig, train: bool, category_map: CategoryMap | None) -> CocoDetection:
    data = loader.dataset
    where = "train_dataloader.dataset" if train else "val_dataloader.dataset"
    if not data.img_folder or not data.ann_file:
        raise ValueError(f"{cfg.source}: {where}.img_folder and {where}.ann_file must be set")
    if not Path(data.img_folder).is_dir():
        raise FileNotFoundError(
            f"{cfg.source}: {where}.img_folder {data.img_folder} is not a folder; point it at the split's images"
        )
    schedule = build_schedule(data.policy, loader.collate.stop_epoch) if train else None
    size = tuple(cfg.model.decoder.eval_spatial_size or (640, 640))
    if data.ops:
        transforms = build_pipeline(data.ops, schedule, f"{cfg.source}: {where}.transforms", keep_uint8=True)
    else:  # uint8 until the trainer's device (Trainer converts with images_to_device)
        transforms = train_transforms(size, schedule, keep_uint8=True) if train else val_transforms(size, True)
    if category_map is None and not cfg.remap_mscoco_category:
        category_map = _label_map(cfg, data.ann_file)
    dataset = CocoDetection(
        data.img_folder,
        data.ann_file,
        transforms,
        remap_mscoco_category=cfg.remap_mscoco_category,
        category_map=category_map,
    )
    if len(dataset) == 0 or dataset.num_boxes == 0:  # background images are fine, a split of them is not
        what = f"{len(dataset)} images but no annotations"
        if len(dataset) == 0:
            missing = dataset.images_left_out
            what = f"no readable images ({missing} listed, none found in {data.img_folder})" if missing else "no images"
        raise ValueError(f"{data.ann_file}: {where}.ann_file has {what}; point it at the split's annotation file")
    dataset.schedule = schedule
    return dataset


def _label_map(cfg: TrainConfig, ann_file: str) -> CategoryMap | None:
    """Contiguous labels by default; label == category id when the config's ``num_classes`` is the
    largest id + 1 (the official Objects365 setting: ids 1..365, ``num_classes: 366``)."""
    categories = object_categories(read_coco_json(ann_file))
    if not categories:
        return None
    contiguous = CategoryMap.from_categories(categories)
    largest = max(int(c["id"]) for c in categories)
    if contiguous.num_classes != cfg.model.num_classes and largest + 1 == cfg.model.num_classes:
        return CategoryMap.identity(categories)
    return contiguous


def _persistent_workers(device: torch.device, num_workers: int) -> bool:
    """Whether loader workers live across epochs: on CUDA, where their start-up each epoch would idle the GPU.

    CPU runs start fresh workers each epoch, as the official code does (the bench curves and the quick start's
    AP were measured with their random streams).
    """
    return device.type == "cuda" and num_workers > 0


def _loader(dataset: CocoDetection, loader: LoaderConfig, train: bool, seed: int, device: torch.device) -> DataLoader:
    """The DataLoader of one split; on CUDA its workers persist across epochs and batches come pinned."""
    world = get_world_size()
    if loader.total_batch_size % world:
        raise ValueError(f"total_batch_size {loader.total_batch_size} is not divisible by {world} processes")
    batch = loader.total_batch_size // world
    if train and loader.collate.base_size_repeat is not None:
        collate = BatchImageCollateFunction(
            loader.collate.base_size, loader.collate.base_size_repeat, schedule=dataset.schedule
        )
    else:
        collate = batch_image_collate
    sampler = DistributedSampler(dataset, shuffle=loader.shuffle, seed=seed) if is_distributed() else None
    persistent = _persistent_workers(device, loader.num_workers)
    items = dataset
    if persistent and train:  # a reused iterator skips the global-RNG draws of a fresh one: epoch-keyed streams
        items = EpochSeededDataset(dataset, dataset.schedule, seed, get_rank())
        # the order of (seed, epoch) alone, via set_epoch: the one-process case of the distributed sampler
        sampler = sampler or DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=loader.shuffle, seed=seed)
    base_seeds = torch.Generator().manual_seed(seed) if persistent else None  # workers' seeds, off the global RNG
    return DataLoader(
        items,
        batch_size=batch,
        shuffle=loader.shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=loader.num_workers,
        drop_last=loader.drop_last and len(dataset) >= batch,
        collate_fn=collate,
        persistent_workers=persistent,
        pin_memory=device.type == "cuda",
        generator=base_seeds,
    )


def _criterion(cfg: TrainConfig) -> DFINECriterion:
    c = cfg.criterion
    matcher = dict(c.matcher)
    return DFINECriterion(
        matcher=HungarianMatcher(
            cost_class=matcher["cost_class"],
            cost_bbox=matcher["cost_bbox"],
            cost_giou=matcher["cost_giou"],
            alpha=matcher.get("alpha", 0.25),
            gamma=matcher.get("gamma", 2.0),
            use_focal_loss=matcher.get("use_focal_loss", True),
        ),
        weights=dict(c.weight_dict),
        losses=c.losses,
        alpha=c.alpha,
        gamma=c.gamma,
        num_classes=cfg.model.num_classes,
        reg_max=c.reg_max,
    )


def _schedules(cfg: TrainConfig, optimizer: torch.optim.Optimizer, iters_per_epoch: int):
    """``(epoch scheduler, warm-up, per-iteration scheduler)`` for the config's schedule type."""
    s = cfg.scheduler
    if s.type.lower() == "flatcosine":
        total = cfg.epochs * iters_per_epoch
        flat_cosine = FlatCosineSchedule(
            optimizer, total, s.warmup_iter, s.flat_epoch * iters_per_epoch, s.no_aug_epoch * iters_per_epoch,
            s.lr_gamma,
        )  # fmt: skip
        return None, None, flat_cosine
    scheduler = build_lr_scheduler(optimizer, s.type, milestones=s.milestones, gamma=s.gamma)
    warmup = LinearWarmup(optimizer, s.warmup_duration) if s.warmup_duration > 0 else None
    return scheduler, warmup, None


def load_pretrained_backbone(backbone: HGNetv2, local_model_dir: str | Path) -> None:
    """ImageNet weights into ``backbone``: from ``local_model_dir`` when there, else downloaded into the cache.

    Rank 0 downloads alone; the other ranks wait, then find the file in the cache.
    """
    if not is_main_process():
        barrier()
    path = hgnetv2_weights(backbone.name, local_model_dir, progress=is_main_process())
    if is_main_process():
        barrier()
    load_hgnetv2_pretrained(backbone, path)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (oneDNN's check: AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def _local_weights(source: str | None) -> str | None:
    """``-r``/``-t`` as a local file: a URL or zoo name is downloaded into the cache first."""
    from ..loading import is_remote_source, resolve_weights

    if source is None or not is_remote_source(source):
        return source  # a local path, present or not (a missing one is reported with the resumable files)
    return str(resolve_weights(source))


def _refuse_another_model(path: str, cfg: TrainConfig) -> None:
    """A dfine checkpoint holds its model config: refuse one that differs from ``cfg``'s, naming the field."""
    from ..loading import config_difference

    if not Path(path).is_file():
        return  # resuming reports a missing file, naming the run's resumable checkpoints
    checkpoint = read_checkpoint(path)
    meta = checkpoint.get("dfine") if isinstance(checkpoint, dict) else None
    if not (isinstance(meta, dict) and isinstance(meta.get("model"), dict)):
        return  # official files hold weights only: the strict load names what does not fit
    difference = config_difference(model_config_from_dict(meta["model"]), cfg.model)
    if difference is not None:
        raise CheckpointError(
            f"{path} was trained with another model than {cfg.source} describes ({difference}, checkpoint vs "
            "config); pass the config it was trained with (-c), or fine-tune from it with -t"
        )


def _effective_config(cfg: TrainConfig, run: RunOptions, device: torch.device) -> TrainConfig:
    """``cfg`` with the command line's ``--use-amp`` / ``--seed``, and fp32 where the CPU has no native bf16."""
    if run.use_amp is not None:
        cfg = dataclasses.replace(cfg, use_amp=run.use_amp)
    if run.seed is not None:
        cfg = dataclasses.replace(cfg, seed=run.seed)
    if cfg.use_amp and device.type == "cpu" and not cpu_has_native_bf16():
        if is_main_process():
            logger.info(
                "use_amp: this CPU has no native bfloat16 (AVX512-BF16 / AMX), where bf16 autocast runs several "
                "times slower than fp32 (15 vs 2 s per step measured); training in fp32"
            )
        cfg = dataclasses.replace(cfg, use_amp=False)
    return cfg


def _datasets(cfg: TrainConfig, run: RunOptions) -> tuple[CocoDetection | None, CocoDetection, CategoryMap]:
    """The train split (None for an evaluation), the val split and the label <-> category map they share."""
    train_set = None if run.test_only else _dataset(cfg, cfg.train, True, None)
    category_map = train_set.category_map if train_set is not None else None
    val_set = _dataset(cfg, cfg.val, False, category_map)
    category_map = category_map or val_set.category_map
    if category_map.num_classes != cfg.model.num_classes:
        raise ValueError(
            f"{cfg.source}: num_classes is {cfg.model.num_classes} but the dataset has {category_map.num_classes} "
            f"categories ({', '.join(category_map.class_names[:8])}...); set num_classes: {category_map.num_classes}"
        )
    return train_set, val_set, category_map


def _model_and_ema(
    cfg: TrainConfig, run: RunOptions, device: torch.device, category_map: CategoryMap
) -> tuple[DFINE, nn.Module, ModelEMA | None]:
    """The model (starting weights: ImageNet backbone, or ``-t`` weights), the module that trains it (DDP-wrapped
    when distributed) and its EMA."""
    with _naming(cfg.source):
        model = DFINE.from_config(cfg.model)
    if cfg.pretrained_backbone and not (run.resume or run.tuning):
        load_pretrained_backbone(model.backbone, cfg.local_model_dir)
    if run.tuning:
        report = load_for_finetuning(model, run.tuning, list(category_map.class_names))
        if is_main_process():
            logger.info("fine-tuning from %s: %s", run.tuning, report.summary())
    use_training_paths(model)
    model = model.to(device, memory_format=torch.channels_last) if cfg.channels_last else model.to(device)
    if is_distributed() and cfg.sync_bn:
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif is_main_process():
            logger.info("sync_bn: SyncBatchNorm needs CUDA; BatchNorm statistics stay per process on CPU")
    ema = ModelEMA(model, cfg.ema.decay, cfg.ema.warmups, cfg.ema.start) if cfg.ema.enabled else None
    train_model: nn.Module = model
    if is_distributed():
        ids = [device.index] if device.type == "cuda" else None
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=ids, find_unused_parameters=cfg.find_unused_parameters
        )
    return model, train_model, ema


def _optimisation(cfg: TrainConfig, model: nn.Module, steps_per_epoch: int):
    """``(optimizer, epoch scheduler, warm-up, per-iteration scheduler)`` of the config's optimizer section."""
    o = cfg.optimizer
    with _naming(cfg.source):
        optimizer = build_optimizer(model, o.type, o.lr, o.weight_decay, o.betas, o.momentum, list(o.groups))
        return (optimizer, *_schedules(cfg, optimizer, steps_per_epoch))


def _epoch_setter(train_set: CocoDetection | None, train_loader) -> Callable[[int], None]:
    """What the trainer calls at each epoch start: the augmentation schedule and the distributed sampler."""
    schedule = getattr(train_set, "schedule", None)

    def set_epoch(epoch: int) -> None:
        if schedule is not None:
            schedule.set_epoch(epoch)
        sampler = getattr(train_loader, "sampler", None)
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)

    return set_epoch


def _metadata(cfg: TrainConfig, category_map: CategoryMap) -> dict[str, Any]:
    """What every checkpoint carries besides the weights (class names, category ids, the model config)."""
    return {
        "class_names": list(category_map.class_names),
        "category_ids": list(category_map.category_ids),
        "num_classes": category_map.num_classes,
        "model": dataclasses.asdict(cfg.model),
        "num_top_queries": cfg.num_top_queries,
        "remap_mscoco_category": cfg.remap_mscoco_category,
        "config_source": cfg.source,
    }


def _run_folder(cfg: TrainConfig, run: RunOptions, output_dir: Path):
    """Create the run folder with the run's ``config.yml``; returns the tensorboard writer (None if unavailable)."""
    if not is_main_process() or run.test_only:
        return None
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(
            f"cannot create the run folder {output_dir} ({err.strerror}); set output_dir or --output-dir to a "
            "writable folder"
        ) from None
    (output_dir / "config.yml").write_text(yaml.safe_dump(cfg.raw, sort_keys=False))
    return _summary_writer(run.summary_dir or cfg.summary_dir or str(output_dir / "summary"))


def _trainer_options(cfg: TrainConfig, run: RunOptions, category_map: CategoryMap) -> TrainerOptions:
    return TrainerOptions(
        epochs=cfg.epochs,
        clip_max_norm=cfg.clip_max_norm,
        use_amp=cfg.use_amp,
        grad_accum_steps=cfg.grad_accum_steps,
        stop_epoch=cfg.train.collate.stop_epoch,
        ema_restart_decay=cfg.train.collate.ema_restart_decay,
        checkpoint_freq=cfg.checkpoint_freq,
        print_freq=cfg.print_freq,
        seed=cfg.seed,
        early_stopping_patience=cfg.early_stopping_patience,
        eval_freq=cfg.eval_freq,
        channels_last=cfg.channels_last,
        coco_block_on_console=run.coco_block_on_console,
        metadata=_metadata(cfg, category_map),
    )


def _start_from_checkpoint(trainer: Trainer, model: DFINE, ema: ModelEMA | None, cfg: TrainConfig, run: RunOptions):
    """``-r``: resume the run, or (``--test-only``) load the weights to evaluate."""
    _refuse_another_model(run.resume, cfg)
    if not run.test_only:
        trainer.resume(run.resume)
        return
    fix = f"Evaluate it with the config it was trained with (-c), not {cfg.source}."
    report = load_checkpoint(model, run.resume, strict=True, fix=fix)
    if ema is not None:
        ema.module.load_state_dict(model.state_dict())
    if is_main_process():
        logger.info("evaluating %s (%s weights)", run.resume, report.source)


def _set_threads(cfg: TrainConfig, run: RunOptions, device: torch.device) -> None:
    """Intra-op threads from the usable cores (:func:`dfine.threads.plan_threads`), said once."""
    workers = cfg.train.num_workers if not run.test_only else cfg.val.num_workers
    plan = plan_threads(loader_workers=workers, requested=run.threads, device_type=device.type)
    apply_threads(plan)
    if is_main_process():
        logger.info("%s", plan.describe())


def build_trainer(cfg: TrainConfig, run: RunOptions) -> tuple[Trainer, dict[str, Any]]:
    """Everything for one run, and a description of it (class names, sizes) for logging."""
    run = dataclasses.replace(run, resume=_local_weights(run.resume), tuning=_local_weights(run.tuning))
    output_dir = Path(run.output_dir or cfg.output_dir)
    device = init_distributed(run.device or cfg.device)
    cfg = _effective_config(cfg, run, device)
    _set_threads(cfg, run, device)
    seed_everything(cfg.seed)
    train_set, val_set, category_map = _datasets(cfg, run)
    model, train_model, ema = _model_and_ema(cfg, run, device, category_map)
    train_loader = _loader(train_set, cfg.train, True, cfg.seed, device) if train_set is not None else []
    # schedules count optimizer steps: with accumulation, one per grad_accum_steps batches (and the tail)
    steps = max(1, math.ceil(len(train_loader) / max(1, cfg.grad_accum_steps))) if train_set is not None else 1
    optimizer, lr_scheduler, warmup, iteration_scheduler = _optimisation(cfg, model, steps)
    evaluator = CocoEvaluator(val_set.coco_gt_dict(), list(category_map.category_ids), list(category_map.class_names))
    trainer = Trainer(
        model=train_model,
        criterion=_criterion(cfg).to(device),
        postprocessor=PostProcessor(cfg.model.num_classes, cfg.num_top_queries).to(device),
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
        warmup=warmup,
        ema=ema,
        train_loader=train_loader,
        val_loader=_loader(val_set, cfg.val, False, cfg.seed, device),
        evaluator=evaluator,
        device=device,
        output_dir=output_dir,
        options=_trainer_options(cfg, run, category_map),
        set_epoch=_epoch_setter(train_set, train_loader),
        writer=_run_folder(cfg, run, output_dir),
        iteration_scheduler=iteration_scheduler,
    )
    if run.resume:
        _start_from_checkpoint(trainer, model, ema, cfg, run)
    description = {
        "device": str(device),
        "world_size": get_world_size(),
        "train_images": len(train_set) if train_set is not None else 0,
        "val_images": len(val_set),
        "classes": list(category_map.class_names),
    }
    if is_main_process() and not run.test_only:
        (output_dir / "run.json").write_text(json.dumps(description, indent=2))
    return trainer, description


def _summary_writer(path: str):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.info("tensorboard is not installed; no scalars are written (pip install dfine[train])")
        return None
    return SummaryWriter(path)

"""Typed training configuration, translated from an official-style YAML dict at the edge.

Every official key is accepted (including the ``type:`` entries, read through plain name tables, and
the official spelling ``epoches``); an unknown or misspelled key is an error that names the file, the
key and the closest valid key, and a wrong type names the expected one.
"""

from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .presets import ModelConfig, encoder_tokens
from .yaml_config import ConfigError, apply_overrides, as_number, canonical_epochs, load_yaml_config
from .yaml_model import model_config_from_dict

__all__ = [
    "ParamGroupSpec",
    "TrainConfig",
    "LoaderConfig",
    "DatasetConfig",
    "CollateConfig",
    "OptimizerConfig",
    "SchedulerConfig",
    "EMAConfig",
    "CriterionConfig",
    "load_train_config",
]

COLLATE_NAMES = {"BatchImageCollateFunction", "BatchImageCollateFuncion"}  # the seed README's spelling too
DATASET_NAMES = {"CocoDetection"}  # the one dataset type a config is read as; any other is refused, not ignored


@dataclass(frozen=True)
class CollateConfig:
    base_size: int = 640
    base_size_repeat: int | None = None  # None: multi-scale off
    stop_epoch: int | None = None
    ema_restart_decay: float = 0.9999


@dataclass(frozen=True)
class DatasetConfig:
    type: str = "CocoDetection"
    img_folder: str = ""
    ann_file: str = ""
    return_masks: bool = False
    ops: tuple[dict[str, Any], ...] | None = None  # transform ops as in the YAML (None: default pipeline)
    policy: dict[str, Any] | None = None  # {"name": "stop_epoch", "epoch": N, "ops": [...]}


@dataclass(frozen=True)
class LoaderConfig:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    total_batch_size: int = 32
    num_workers: int = 4
    shuffle: bool = True
    drop_last: bool = True
    collate: CollateConfig = field(default_factory=CollateConfig)


@dataclass(frozen=True)
class ParamGroupSpec:
    """Parameters whose name matches ``pattern`` (``re.search``) get these optimizer options."""

    pattern: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OptimizerConfig:
    type: str = "AdamW"
    lr: float = 0.0001
    weight_decay: float = 0.0001
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.9
    groups: tuple[ParamGroupSpec, ...] = ()


@dataclass(frozen=True)
class SchedulerConfig:
    type: str = "MultiStepLR"  # or "flatcosine"
    milestones: tuple[int, ...] = (1000,)
    gamma: float = 0.1
    warmup_duration: int = 0  # LinearWarmup iterations (0: none)
    lr_gamma: float = 0.5  # flatcosine: final LR fraction
    warmup_iter: int = 2000
    flat_epoch: int = 0
    no_aug_epoch: int = 0


@dataclass(frozen=True)
class EMAConfig:
    enabled: bool = False  # ``use_ema``; off unless the config turns it on, as in the official code
    decay: float = 0.9999
    warmups: int = 1000
    start: int = 0


@dataclass(frozen=True)
class CriterionConfig:
    weight_dict: dict[str, float] = field(
        default_factory=lambda: {
            "loss_vfl": 1,
            "loss_bbox": 5,
            "loss_giou": 2,
            "loss_fgl": 0.15,
            "loss_ddf": 1.5,
        }
    )
    losses: tuple[str, ...] = ("vfl", "boxes", "local")
    alpha: float = 0.75
    gamma: float = 2.0
    reg_max: int = 32
    matcher: dict[str, float] = field(
        default_factory=lambda: {"cost_class": 2, "cost_bbox": 5, "cost_giou": 2, "alpha": 0.25, "gamma": 2.0}
    )


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training or evaluation run needs. ``source`` is the YAML file it came from."""

    source: str = "<defaults>"
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrained_backbone: bool = False
    local_model_dir: str = "weight/hgnetv2/"
    criterion: CriterionConfig = field(default_factory=CriterionConfig)
    num_top_queries: int = 300
    remap_mscoco_category: bool = False
    train: LoaderConfig = field(default_factory=LoaderConfig)
    val: LoaderConfig = field(default_factory=lambda: LoaderConfig(shuffle=False, drop_last=False))
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    epochs: int = 72
    clip_max_norm: float = 0.1
    use_amp: bool = False
    sync_bn: bool = True
    find_unused_parameters: bool = False
    print_freq: int = 100
    output_dir: str = "./output"
    summary_dir: str | None = None
    checkpoint_freq: int = 12
    seed: int = 0
    device: str | None = None
    grad_accum_steps: int = 1
    early_stopping_patience: int = 0
    eval_freq: int = 1
    channels_last: bool = True
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


# --------------------------------------------------------------------------------- translation
def _given(raw: dict[str, Any], key: str) -> Any:
    """``raw[key]``, else :class:`TrainConfig`'s default for the field of that name (its one home)."""
    return raw.get(key, getattr(TrainConfig, key))


_IGNORED_TOP = {
    "task",
    "evaluator",
    "model",
    "criterion",
    "postprocessor",
    "DFINE",
    "scaler",
    "use_wandb",
    "yaml_cfg",
}
_RUNTIME_TOP = {
    "num_classes", "remap_mscoco_category", "train_dataloader", "val_dataloader", "print_freq", "output_dir",
    "summary_dir", "checkpoint_freq", "sync_bn", "find_unused_parameters", "use_amp", "use_ema", "ema",
    "epoches", "epochs", "clip_max_norm", "optimizer", "lr_scheduler", "lr_warmup_scheduler", "lrsheduler",
    "lr_gamma", "warmup_iter", "flat_epoch", "no_aug_epoch", "use_focal_loss", "eval_spatial_size",
    "HGNetv2", "HybridEncoder", "DFINETransformer", "PostProcessor", "DFINEPostProcessor", "DFINECriterion",
    "seed", "device", "grad_accum_steps", "early_stopping_patience", "eval_freq", "resume", "tuning", "test_only",
    "channels_last",
}  # fmt: skip


_A_TYPE = {
    int: "an integer",
    float: "a number",
    str: "a string",
    bool: "true or false",
    list: "a list",
    dict: "a mapping",
}


class _Reader:
    """Reads one config section, remembering the file for error messages."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {message}")

    def check_keys(self, section: dict[str, Any], allowed: set[str], where: str) -> None:
        for key in section:
            if key not in allowed:
                match = difflib.get_close_matches(key, sorted(allowed), n=1)
                hint = f"; did you mean {match[0]!r}?" if match else f"; valid keys: {', '.join(sorted(allowed))}"
                raise self.fail(f"unknown key {where + '.' if where else ''}{key!r}{hint}")

    def typed(self, value: Any, expected: type | tuple[type, ...], where: str) -> Any:
        if expected in (float, (int, float)):
            value = as_number(value)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, bool) and expected in (int, float):
            raise self.fail(f"{where} must be {_A_TYPE[expected]}, got {value!r}")
        if not isinstance(value, expected):
            wanted = " or ".join(
                _A_TYPE.get(t, t.__name__) for t in (expected if isinstance(expected, tuple) else (expected,))
            )
            raise self.fail(f"{where} must be {wanted}, got {type(value).__name__} {value!r}")
        return value

    def at_least(self, value: Any, lowest: int, where: str) -> int:
        """An int of at least ``lowest`` (a count: epochs, batch size, workers)."""
        value = self.typed(value, int, where)
        if value < lowest:
            raise self.fail(f"{where} must be at least {lowest}, got {value}")
        return value

    def section(self, raw: dict[str, Any], key: str) -> dict[str, Any]:
        value = raw.get(key) or {}
        if not isinstance(value, dict):
            raise self.fail(f"{key} must be a mapping, got {type(value).__name__}")
        return value


def _dataclass_from(reader: _Reader, cls, values: dict[str, Any], where: str, ignore: set[str] = frozenset()):
    names = {f.name: f for f in fields(cls)}
    reader.check_keys(values, set(names) | set(ignore), where)
    kwargs = {}
    for key, value in values.items():
        if key in ignore:
            continue
        default = getattr(cls(), key)
        if isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)
        elif isinstance(default, bool):
            value = reader.typed(value, bool, f"{where}.{key}")
        elif isinstance(default, int | float) and value is not None:
            value = reader.typed(value, (int, float), f"{where}.{key}")
        elif isinstance(default, str) and value is not None:
            value = reader.typed(value, str, f"{where}.{key}")
        kwargs[key] = value
    return cls(**kwargs)


def _model_config(reader: _Reader, raw: dict[str, Any]) -> tuple[ModelConfig, bool, str]:
    """The model (via :func:`~dfine.config.yaml_model.model_config_from_dict`) and the backbone's
    pretrained-weight settings."""
    backbone = reader.section(raw, "HGNetv2")
    reader.typed(raw.get("num_classes", 80), int, "num_classes")
    try:
        model = model_config_from_dict(raw, reader.source)
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return model, bool(backbone.get("pretrained", False)), str(backbone.get("local_model_dir", "weight/hgnetv2/"))


def _loader_config(reader: _Reader, raw: dict[str, Any], key: str, train: bool) -> LoaderConfig:
    section = reader.section(raw, key)
    reader.check_keys(
        section,
        {
            "type",
            "dataset",
            "total_batch_size",
            "batch_size",
            "num_workers",
            "shuffle",
            "drop_last",
            "collate_fn",
        },
        key,
    )
    dataset_raw = dict(section.get("dataset") or {})
    reader.check_keys(
        dataset_raw,
        {"type", "img_folder", "ann_file", "return_masks", "transforms", "remap_mscoco_category"},
        f"{key}.dataset",
    )
    dataset_type = dataset_raw.get("type", DatasetConfig.type)
    if dataset_type not in DATASET_NAMES:
        raise reader.fail(
            f"{key}.dataset.type {dataset_type!r} is not supported in a config; use CocoDetection (turn a YOLO or "
            "VOC folder into COCO json with `dfine data convert SRC --out DIR`)"
        )
    transforms = dataset_raw.get("transforms") or {}
    ops = transforms.get("ops")
    dataset = DatasetConfig(
        type=dataset_type,
        img_folder=str(dataset_raw.get("img_folder", DatasetConfig.img_folder)),
        ann_file=str(dataset_raw.get("ann_file", DatasetConfig.ann_file)),
        return_masks=bool(dataset_raw.get("return_masks", DatasetConfig.return_masks)),
        ops=tuple(ops) if ops else None,
        policy=transforms.get("policy"),
    )
    collate_raw = dict(section.get("collate_fn") or {})
    collate_type = collate_raw.pop("type", "BatchImageCollateFunction")
    if collate_type not in COLLATE_NAMES:
        raise reader.fail(f"{key}.collate_fn.type {collate_type!r} is not supported; use BatchImageCollateFunction")
    if collate_type == "BatchImageCollateFuncion":
        warnings.warn(
            f"{reader.source}: {key}.collate_fn.type 'BatchImageCollateFuncion' is the seed README's misspelling "
            "of BatchImageCollateFunction; accepted",
            stacklevel=2,
        )
    collate = _dataclass_from(reader, CollateConfig, collate_raw, f"{key}.collate_fn", ignore={"scales"})
    batch = section.get("total_batch_size", section.get("batch_size", 32 if train else 64))
    return LoaderConfig(
        dataset=dataset,
        total_batch_size=reader.at_least(batch, 1, f"{key}.total_batch_size"),
        num_workers=reader.at_least(section.get("num_workers", 4), 0, f"{key}.num_workers"),
        shuffle=bool(section.get("shuffle", train)),
        drop_last=bool(section.get("drop_last", train)),
        collate=collate,
    )


def _optimizer_config(reader: _Reader, raw: dict[str, Any]) -> OptimizerConfig:
    section = dict(reader.section(raw, "optimizer"))
    reader.check_keys(section, {"type", "params", "lr", "betas", "weight_decay", "momentum"}, "optimizer")
    groups = []
    for i, group in enumerate(section.get("params") or []):
        if not isinstance(group, dict) or "params" not in group:
            raise reader.fail(f"optimizer.params[{i}] must be a mapping with a 'params' regex")
        options = {k: v for k, v in group.items() if k != "params"}
        reader.check_keys(options, {"lr", "weight_decay", "betas", "momentum"}, f"optimizer.params[{i}]")
        groups.append(ParamGroupSpec(pattern=str(group["params"]), options=options))
    return OptimizerConfig(
        type=section.get("type", OptimizerConfig.type),
        lr=reader.typed(section.get("lr", OptimizerConfig.lr), float, "optimizer.lr"),
        weight_decay=reader.typed(
            section.get("weight_decay", OptimizerConfig.weight_decay), float, "optimizer.weight_decay"
        ),
        betas=tuple(section.get("betas", OptimizerConfig.betas)),
        momentum=reader.typed(section.get("momentum", OptimizerConfig.momentum), float, "optimizer.momentum"),
        groups=tuple(groups),
    )


def _scheduler_config(reader: _Reader, raw: dict[str, Any]) -> SchedulerConfig:
    sched = dict(reader.section(raw, "lr_scheduler"))
    warm = dict(reader.section(raw, "lr_warmup_scheduler"))
    reader.check_keys(sched, {"type", "milestones", "gamma"}, "lr_scheduler")
    reader.check_keys(warm, {"type", "warmup_duration"}, "lr_warmup_scheduler")
    kind = raw.get("lrsheduler") or sched.get("type", SchedulerConfig.type)
    return SchedulerConfig(
        type=kind,
        milestones=tuple(sched.get("milestones", SchedulerConfig.milestones)),
        gamma=reader.typed(sched.get("gamma", SchedulerConfig.gamma), float, "lr_scheduler.gamma"),
        warmup_duration=reader.typed(
            warm.get("warmup_duration", SchedulerConfig.warmup_duration), int, "lr_warmup_scheduler.warmup_duration"
        ),
        lr_gamma=reader.typed(raw.get("lr_gamma", SchedulerConfig.lr_gamma), float, "lr_gamma"),
        warmup_iter=reader.typed(raw.get("warmup_iter", SchedulerConfig.warmup_iter), int, "warmup_iter"),
        flat_epoch=reader.typed(raw.get("flat_epoch", SchedulerConfig.flat_epoch), int, "flat_epoch"),
        no_aug_epoch=reader.typed(raw.get("no_aug_epoch", SchedulerConfig.no_aug_epoch), int, "no_aug_epoch"),
    )


def _criterion_config(reader: _Reader, raw: dict[str, Any]) -> CriterionConfig:
    section = dict(reader.section(raw, "DFINECriterion"))
    reader.check_keys(
        section,
        {
            "weight_dict",
            "losses",
            "alpha",
            "gamma",
            "reg_max",
            "matcher",
            "boxes_weight_format",
            "share_matched_indices",
        },
        "DFINECriterion",
    )
    matcher_raw = dict(section.get("matcher") or {})
    matcher_raw.pop("type", None)
    reader.check_keys(matcher_raw, {"weight_dict", "alpha", "gamma", "use_focal_loss"}, "DFINECriterion.matcher")
    matcher = dict(CriterionConfig().matcher)
    matcher.update(matcher_raw.get("weight_dict") or {})
    for key in ("alpha", "gamma", "use_focal_loss"):
        if key in matcher_raw:
            matcher[key] = matcher_raw[key]
    default = CriterionConfig()
    return CriterionConfig(
        weight_dict=dict(section.get("weight_dict", default.weight_dict)),
        losses=tuple(section.get("losses", default.losses)),
        alpha=reader.typed(section.get("alpha", default.alpha), float, "DFINECriterion.alpha"),
        gamma=reader.typed(section.get("gamma", default.gamma), float, "DFINECriterion.gamma"),
        reg_max=reader.typed(section.get("reg_max", default.reg_max), int, "DFINECriterion.reg_max"),
        matcher=matcher,
    )


def _check_queries_fit(model: ModelConfig, source: str) -> None:
    """Refuse more queries than the input size has feature positions to select them from (a failure deep inside
    the first forward pass otherwise), before any data is read."""
    size = model.decoder.eval_spatial_size
    if size is None:
        return
    tokens = encoder_tokens(model.decoder, size)
    if model.decoder.num_queries > tokens:
        raise ConfigError(
            f"{source}: DFINETransformer.num_queries {model.decoder.num_queries} is more than the {tokens} feature "
            f"positions of a {size[0]}x{size[1]} input; set num_queries (and num_top_queries) to at most {tokens}, "
            "or raise eval_spatial_size"
        )


def train_config_from_dict(raw: dict[str, Any], source: str = "<dict>") -> TrainConfig:
    """Translate a merged official-style config dict into a :class:`TrainConfig`."""
    raw = canonical_epochs(raw, source)  # also for a dict that did not come through load_yaml_config
    reader = _Reader(source)
    reader.check_keys(raw, _RUNTIME_TOP | _IGNORED_TOP, "")
    model, pretrained, local_dir = _model_config(reader, raw)
    ema_raw = dict(reader.section(raw, "ema"))
    ema_raw.pop("type", None)
    ema = _dataclass_from(reader, EMAConfig, ema_raw, "ema")
    ema = EMAConfig(bool(raw.get("use_ema", EMAConfig.enabled)), ema.decay, ema.warmups, ema.start)
    # the official section is DFINEPostProcessor; PostProcessor is accepted too
    post = {**reader.section(raw, "PostProcessor"), **reader.section(raw, "DFINEPostProcessor")}
    reader.check_keys(post, {"num_top_queries", "use_focal_loss", "remap_mscoco_category"}, "DFINEPostProcessor")
    epochs = raw.get("epoches", TrainConfig.epochs)  # the official key is spelled "epoches"
    _check_queries_fit(model, source)
    return TrainConfig(
        source=source,
        model=model,
        pretrained_backbone=pretrained,
        local_model_dir=local_dir,
        criterion=_criterion_config(reader, raw),
        num_top_queries=reader.typed(_given(post, "num_top_queries"), int, "PostProcessor.num_top_queries"),
        remap_mscoco_category=bool(_given(raw, "remap_mscoco_category")),
        train=_loader_config(reader, raw, "train_dataloader", train=True),
        val=_loader_config(reader, raw, "val_dataloader", train=False),
        optimizer=_optimizer_config(reader, raw),
        scheduler=_scheduler_config(reader, raw),
        ema=ema,
        epochs=reader.at_least(epochs, 1, "epoches"),
        clip_max_norm=reader.typed(_given(raw, "clip_max_norm"), float, "clip_max_norm"),
        use_amp=bool(_given(raw, "use_amp")),
        sync_bn=bool(_given(raw, "sync_bn")),
        find_unused_parameters=bool(_given(raw, "find_unused_parameters")),
        print_freq=reader.typed(_given(raw, "print_freq"), int, "print_freq"),
        output_dir=str(_given(raw, "output_dir")),
        summary_dir=raw.get("summary_dir"),
        checkpoint_freq=reader.typed(_given(raw, "checkpoint_freq"), int, "checkpoint_freq"),
        seed=reader.typed(_given(raw, "seed") or 0, int, "seed"),
        device=raw.get("device"),
        grad_accum_steps=reader.typed(_given(raw, "grad_accum_steps"), int, "grad_accum_steps"),
        early_stopping_patience=reader.typed(_given(raw, "early_stopping_patience"), int, "early_stopping_patience"),
        eval_freq=reader.typed(_given(raw, "eval_freq"), int, "eval_freq"),
        channels_last=reader.typed(_given(raw, "channels_last"), bool, "channels_last"),
        raw=raw,
    )


def load_train_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Load a YAML config (with includes) and ``-u`` overrides into a :class:`TrainConfig`."""
    raw = apply_overrides(load_yaml_config(path), overrides)
    return train_config_from_dict(raw, str(path))

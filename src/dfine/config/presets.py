"""Model configurations as frozen dataclasses, and the N/S/M/L/X presets.

Defaults equal the official ``dfine_hgnetv2.yml`` values (the L model); each preset overrides what
its official ``dfine_hgnetv2_{size}_coco.yml`` overrides.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields, replace
from typing import Any

__all__ = [
    "BackboneConfig",
    "EncoderConfig",
    "DecoderConfig",
    "ModelConfig",
    "MODEL_PRESETS",
    "model_config",
    "model_config_from_dict",
    "available_sizes",
]


@dataclass(frozen=True)
class BackboneConfig:
    """``HGNetv2`` section."""

    name: str = "B4"
    use_lab: bool = False
    return_idx: tuple[int, ...] = (1, 2, 3)
    freeze_stem_only: bool = True
    freeze_at: int = 0
    freeze_norm: bool = True


@dataclass(frozen=True)
class EncoderConfig:
    """``HybridEncoder`` section."""

    in_channels: tuple[int, ...] = (512, 1024, 2048)
    feat_strides: tuple[int, ...] = (8, 16, 32)
    hidden_dim: int = 256
    nhead: int = 8
    dim_feedforward: int = 1024
    dropout: float = 0.0
    enc_act: str = "gelu"
    use_encoder_idx: tuple[int, ...] = (2,)
    num_encoder_layers: int = 1
    pe_temperature: float = 10000.0
    expansion: float = 1.0
    depth_mult: float = 1.0
    act: str = "silu"
    eval_spatial_size: tuple[int, int] | None = (640, 640)


@dataclass(frozen=True)
class DecoderConfig:
    """``DFINETransformer`` section (``num_classes`` lives in :class:`ModelConfig`)."""

    hidden_dim: int = 256
    num_queries: int = 300
    feat_channels: tuple[int, ...] = (256, 256, 256)
    feat_strides: tuple[int, ...] = (8, 16, 32)
    num_levels: int = 3
    num_points: tuple[int, ...] = (3, 6, 3)
    nhead: int = 8
    num_layers: int = 6
    dim_feedforward: int = 1024
    dropout: float = 0.0
    activation: str = "relu"
    num_denoising: int = 100
    label_noise_ratio: float = 0.5
    box_noise_scale: float = 1.0
    learn_query_content: bool = False
    eval_spatial_size: tuple[int, int] | None = (640, 640)
    eval_idx: int = -1
    eps: float = 1e-2
    aux_loss: bool = True
    cross_attn_method: str = "default"
    query_select_method: str = "default"
    reg_max: int = 32
    reg_scale: int | float = 4  # int in the official YAML, so the checkpoint tensor is int64
    layer_scale: float = 1


@dataclass(frozen=True)
class ModelConfig:
    """A whole detector: backbone, encoder, decoder and the class count."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    num_classes: int = 80


def encoder_tokens(decoder: DecoderConfig, spatial_size: tuple[int, int] | list[int]) -> int:
    """Feature positions the decoder selects its queries from at ``(height, width)``: one per cell of each level."""
    height, width = spatial_size
    return sum((height // stride) * (width // stride) for stride in decoder.feat_strides)


def model_config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """Inverse of ``dataclasses.asdict(model_config)`` (e.g. the config stored in a checkpoint)."""

    def section(cls, values: dict[str, Any]):
        names = {f.name for f in fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in names})

    return ModelConfig(
        backbone=section(BackboneConfig, data.get("backbone", {})),
        encoder=section(EncoderConfig, data.get("encoder", {})),
        decoder=section(DecoderConfig, data.get("decoder", {})),
        num_classes=int(data.get("num_classes", 80)),
    )


_NSM_BACKBONE = dict(use_lab=True, freeze_at=-1, freeze_norm=False)

MODEL_PRESETS: dict[str, ModelConfig] = {
    "n": ModelConfig(
        backbone=BackboneConfig(name="B0", return_idx=(2, 3), **_NSM_BACKBONE),
        encoder=EncoderConfig(
            in_channels=(512, 1024),
            feat_strides=(16, 32),
            hidden_dim=128,
            use_encoder_idx=(1,),
            dim_feedforward=512,
            expansion=0.34,
            depth_mult=0.5,
        ),
        decoder=DecoderConfig(
            feat_channels=(128, 128),
            feat_strides=(16, 32),
            hidden_dim=128,
            num_levels=2,
            num_layers=3,
            num_points=(6, 6),
            dim_feedforward=512,
        ),
    ),
    "s": ModelConfig(
        backbone=BackboneConfig(name="B0", return_idx=(1, 2, 3), **_NSM_BACKBONE),
        encoder=EncoderConfig(in_channels=(256, 512, 1024), expansion=0.5, depth_mult=0.34),
        decoder=DecoderConfig(num_layers=3),
    ),
    "m": ModelConfig(
        backbone=BackboneConfig(name="B2", return_idx=(1, 2, 3), **_NSM_BACKBONE),
        encoder=EncoderConfig(in_channels=(384, 768, 1536), depth_mult=0.67),
        decoder=DecoderConfig(num_layers=4),
    ),
    "l": ModelConfig(backbone=BackboneConfig(name="B4")),
    "x": ModelConfig(
        backbone=BackboneConfig(name="B5"),
        encoder=EncoderConfig(hidden_dim=384, dim_feedforward=2048),
        decoder=DecoderConfig(feat_channels=(384, 384, 384), reg_scale=8),
    ),
}


def available_sizes() -> list[str]:
    return list(MODEL_PRESETS)


def _closest(name: str, options: list[str]) -> str:
    match = difflib.get_close_matches(name, options, n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _apply(section: Any, values: dict[str, Any], where: str) -> Any:
    names = [f.name for f in fields(section)]
    unknown = [k for k in values if k not in names]
    if unknown:
        raise ValueError(f"unknown {where} option {unknown[0]!r}{_closest(unknown[0], names)}")
    return replace(section, **{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def model_config(size: str, num_classes: int = 80, **overrides: Any) -> ModelConfig:
    """The preset for ``size`` (n, s, m, l, x) with ``overrides`` applied.

    ``backbone=``, ``encoder=``, ``decoder=`` take dicts for one section; any other keyword is set in
    every section that has a field of that name (``eval_spatial_size=(512, 512)`` sets the encoder
    and the decoder), and an unknown keyword is an error naming the closest valid one.
    """
    key = str(size).lower()
    if key not in MODEL_PRESETS:
        raise ValueError(f"unknown model size {size!r}; choose one of {', '.join(MODEL_PRESETS)}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    cfg = MODEL_PRESETS[key]
    sections = {"backbone": cfg.backbone, "encoder": cfg.encoder, "decoder": cfg.decoder}
    for name in list(sections):
        if name in overrides:
            sections[name] = _apply(sections[name], dict(overrides.pop(name)), name)
    all_names = sorted({f.name for s in sections.values() for f in fields(s)} | set(sections))
    for key_name, value in overrides.items():
        targets = [n for n, s in sections.items() if key_name in {f.name for f in fields(s)}]
        if not targets:
            raise ValueError(f"unknown model option {key_name!r}{_closest(key_name, all_names)}")
        for n in targets:
            sections[n] = _apply(sections[n], {key_name: value}, n)
    return ModelConfig(num_classes=num_classes, **sections)

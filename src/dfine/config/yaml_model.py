"""Read the model part of an official D-FINE YAML file into a :class:`~dfine.config.presets.ModelConfig`.

The file and its ``__include__`` files are merged by :func:`dfine.config.yaml_config.load_yaml_config`
(includes first, in order, then the file itself; nested dicts merged key by key, later wins; nothing
shared between loads). Only the model is read: the ``HGNetv2``, ``HybridEncoder`` and
``DFINETransformer`` sections and the top-level ``num_classes`` and ``eval_spatial_size``; data,
optimizer and runtime keys are ignored, so a model-only file works too.

Unlike the training config (:mod:`dfine.config.schema`, which starts from the base-file defaults),
the values start from a preset picked from ``HGNetv2.name`` (with ``return_idx`` and the decoder's
``num_layers`` telling N from S), and every YAML value is applied over it. A file that includes the
official base ``dfine_hgnetv2.yml`` gives exactly its values either way; a short file that names
only what differs from its preset gives that preset.
"""

from __future__ import annotations

import difflib
from dataclasses import fields
from pathlib import Path
from typing import Any

from .presets import MODEL_PRESETS, BackboneConfig, DecoderConfig, EncoderConfig, ModelConfig, model_config
from .yaml_config import as_number, load_yaml_config

__all__ = ["preset_for_yaml", "load_model_config", "model_config_from_dict"]

# YAML section -> (model_config keyword, config dataclass)
_SECTIONS: dict[str, tuple[str, type]] = {
    "HGNetv2": ("backbone", BackboneConfig),
    "HybridEncoder": ("encoder", EncoderConfig),
    "DFINETransformer": ("decoder", DecoderConfig),
}
# Official keys inside those sections that are not model structure: weight download and wiring.
_IGNORED_KEYS = frozenset({"pretrained", "local_model_dir", "type"})
# The preset whose values equal the official base file (the dataclass defaults): the fallback.
_BASE_PRESET = "l"


def preset_for_yaml(merged: dict[str, Any]) -> str:
    """The preset size (n, s, m, l, x) a merged official config builds on.

    Candidates are the presets with the config's ``HGNetv2.name``; where several share it (B0: N
    and S), the first one that agrees with the ``HGNetv2.return_idx`` and
    ``DFINETransformer.num_layers`` the config sets wins. A backbone that no preset uses (B1, B3,
    B6) falls back to ``l``, whose values are the official base file's.
    """
    backbone = merged.get("HGNetv2") or {}
    decoder = merged.get("DFINETransformer") or {}
    name = backbone.get("name", BackboneConfig.name)
    candidates = [size for size, cfg in MODEL_PRESETS.items() if cfg.backbone.name == name]

    def agrees(size: str) -> bool:
        preset = MODEL_PRESETS[size]
        return_idx = tuple(backbone.get("return_idx", preset.backbone.return_idx))
        num_layers = decoder.get("num_layers", preset.decoder.num_layers)
        return (return_idx, num_layers) == (preset.backbone.return_idx, preset.decoder.num_layers)

    agreeing = [size for size in candidates if agrees(size)]
    return (agreeing or candidates or [_BASE_PRESET])[0]


def _section_overrides(merged: dict[str, Any], section: str, path: Path) -> dict[str, Any]:
    """One section's model fields; unknown keys are an error naming the file and the closest key."""
    values = merged.get(section) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: section {section} must be a mapping, found {type(values).__name__}")
    defaults = {f.name: f.default for f in fields(_SECTIONS[section][1])}
    valid = [*defaults, "num_classes"] if section == "DFINETransformer" else list(defaults)
    overrides = {}
    for key, value in values.items():
        if key in _IGNORED_KEYS:
            continue
        if key not in valid:
            match = difflib.get_close_matches(str(key), valid, n=1)
            hint = f"did you mean {match[0]!r}?" if match else f"valid keys: {', '.join(sorted(valid))}"
            raise ValueError(f"{path} (or one of its includes): unknown key {section}.{key}; {hint}")
        numeric = isinstance(defaults.get(key), int | float) and not isinstance(defaults.get(key), bool)
        overrides[key] = as_number(value) if numeric else value  # YAML 1.1 reads 1e-2 as a string
    return overrides


def load_model_config(path: str | Path) -> ModelConfig:
    """The :class:`ModelConfig` of an official-style D-FINE YAML file (with its includes).

    Raises:
        ValueError: a missing file or include, invalid YAML (``ConfigError``), or an unknown key in
            ``HGNetv2`` / ``HybridEncoder`` / ``DFINETransformer`` (the message names the file, the
            key and the closest valid key).
    """
    return model_config_from_dict(load_yaml_config(path), Path(path))


def _spatial_size(value: Any, where: str, path: Path) -> list[int]:
    """``eval_spatial_size`` as ``[height, width]``; a single number is a square; multiples of the stride 32."""
    size = None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        size = [value, value]
    elif isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value):
        size = list(value)
    if size is None:
        raise ValueError(f"{path}: {where} must be a size N or [height, width] in pixels, got {value!r}")
    if any(v % 32 for v in size):
        rounded = [max(32, round(v / 32) * 32) for v in size]
        raise ValueError(
            f"{path}: {where} {value!r} must be multiples of 32 (the model's largest stride): try {rounded}"
        )
    return size


def model_config_from_dict(merged: dict[str, Any], path: str | Path = "<config>") -> ModelConfig:
    """The :class:`ModelConfig` of an already merged config dict (see :func:`load_model_config`)."""
    path = Path(path)
    sections = {keyword: _section_overrides(merged, section, path) for section, (keyword, _) in _SECTIONS.items()}
    num_classes = sections["decoder"].pop("num_classes", merged.get("num_classes", 80))
    for section, (keyword, _) in _SECTIONS.items():
        if sections[keyword].get("eval_spatial_size") is not None:
            where = f"{section}.eval_spatial_size"
            sections[keyword]["eval_spatial_size"] = _spatial_size(sections[keyword]["eval_spatial_size"], where, path)
    eval_spatial_size = merged.get("eval_spatial_size")
    if eval_spatial_size is not None:  # shared from the top level; a section's own value wins
        eval_spatial_size = _spatial_size(eval_spatial_size, "eval_spatial_size", path)
        for keyword in ("encoder", "decoder"):
            sections[keyword].setdefault("eval_spatial_size", eval_spatial_size)
    try:
        return model_config(preset_for_yaml(merged), num_classes=num_classes, **sections)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None

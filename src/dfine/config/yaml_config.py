"""Official-style YAML configs: ``__include__`` merging and ``-u key.path=value`` overrides.

Includes are resolved relative to the including file and merged first, in order; the including
file's own keys then win (deep merge, later wins). Nothing is shared between loads.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ConfigError",
    "canonical_epochs",
    "load_yaml_config",
    "apply_overrides",
    "deep_merge",
    "as_number",
    "INPUT_SIZE_KEY",
]

INCLUDE_KEY = "__include__"
INPUT_SIZE_KEY = "input_size"  # override that sets every size-dependent entry at once
EPOCHS_KEY = "epoches"  # the released configs' spelling; ``epochs`` (newer official tree) is the same key
EPOCHS_ALIASES = ("epochs", "epoches")


class ConfigError(ValueError):
    """A config problem, with the file, the key and the fix in the message."""


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """A new dict: ``update`` merged into ``base``; nested dicts merge, everything else is replaced."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys to values, found {type(data).__name__}")
    return data


def canonical_epochs(data: dict[str, Any], where: str) -> dict[str, Any]:
    """``epochs`` and ``epoches`` as one key (``epoches``), so the later file or override wins whichever
    spelling each uses; one file giving both with different values is refused."""
    given = {k: data[k] for k in EPOCHS_ALIASES if k in data}
    if len(set(map(repr, given.values()))) > 1:
        raise ConfigError(
            f"{where}: epochs: {given['epochs']!r} and epoches: {given['epoches']!r} are the same setting with "
            "different values; keep one of them"
        )
    if given:
        data = {k: v for k, v in data.items() if k not in EPOCHS_ALIASES}
        data[EPOCHS_KEY] = next(iter(given.values()))
    return data


def load_yaml_config(path: str | Path, _stack: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The fully merged config of ``path`` with all ``__include__`` files resolved."""
    path = Path(path).resolve()
    if path in _stack:
        chain = " -> ".join(str(p) for p in (*_stack, path))
        raise ConfigError(f"circular __include__: {chain}")
    data = canonical_epochs(_read_yaml(path), str(path))
    includes = data.pop(INCLUDE_KEY, []) or []
    if isinstance(includes, str):
        includes = [includes]
    merged: dict[str, Any] = {}
    for include in includes:
        target = (path.parent / include).resolve()
        if not target.is_file():
            raise ConfigError(f"{path}: __include__ entry {include!r} not found (looked for {target})")
        merged = deep_merge(merged, load_yaml_config(target, (*_stack, path)))
    return deep_merge(merged, data)


def _parse_value(text: str) -> Any:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return as_number(value)


def as_number(value: Any) -> Any:
    """YAML 1.1 reads ``1e-4`` (no dot) as a string; turn such strings into floats."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def apply_overrides(config: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (values parsed as YAML: ``3``, ``0.1``, ``[1,2]``, ``true``).

    ``input_size=N`` (or ``[H, W]``) sets the train/val Resize, the multi-scale base size and
    ``eval_spatial_size`` together, so anchors and position embeddings stay consistent.
    """
    config = copy.deepcopy(config)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.path=value (e.g. epoches=12)")
        key, text = item.split("=", 1)
        key = key.strip()
        key = EPOCHS_KEY if key in EPOCHS_ALIASES else key
        value = _parse_value(text.strip())
        if key == INPUT_SIZE_KEY:
            _set_input_size(config, value)
            continue
        node = config
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise ConfigError(f"override {item!r}: {where} is a {type(child).__name__}, not a section")
            node = child
        node[parts[-1]] = value
    return config


def _set_input_size(config: dict[str, Any], value: Any) -> None:
    if isinstance(value, int):
        size = [value, value]
    elif isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value):
        size = list(value)
    else:
        raise ConfigError(f"input_size must be an int or [height, width], got {value!r}")
    if size[0] % 32 or size[1] % 32:
        raise ConfigError(f"input_size {size} must be a multiple of 32 (the network's largest stride)")
    config["eval_spatial_size"] = list(size)
    for section in ("HybridEncoder", "DFINETransformer"):
        if isinstance(config.get(section), dict) and "eval_spatial_size" in config[section]:
            config[section]["eval_spatial_size"] = list(size)
    for loader in ("train_dataloader", "val_dataloader"):
        section = config.get(loader) or {}
        ops = (((section.get("dataset") or {}).get("transforms") or {}).get("ops")) or []
        for op in ops:
            if isinstance(op, dict) and op.get("type") == "Resize":
                op["size"] = list(size)
        collate = section.get("collate_fn")
        if isinstance(collate, dict) and "base_size" in collate:
            collate["base_size"] = size[0]

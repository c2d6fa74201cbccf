"""One path from any weights to a ready model: ``load_model(source) -> (model, ModelInfo)``.

A *source* is any of:

* a size (``"n"`` ... ``"x"``): random weights;
* a dfine training checkpoint: its stored model config, class names and category ids win;
* an official ``.pth`` (``{"ema": {"module": sd}}``, ``{"model": sd}`` or a bare state_dict): the
  size is inferred from the weights, COCO names and ids for 80 classes;
* a Hugging Face transformers checkpoint (a folder with ``config.json`` + ``model.safetensors``, or
  the ``.safetensors`` file);
* a URL, a zoo name (``dfine.available_weights()``) or an HF hub id (``owner/name``): downloaded
  once into the cache (:mod:`dfine.hub.download`).

Every entry point (``dfine.DFINE``, ``dfine predict``/``export``/``visualize``, the tools,
``train.py -r/-t``) goes through here.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import torch

from .config.presets import MODEL_PRESETS, ModelConfig, model_config, model_config_from_dict
from .engine.checkpoint import (
    CheckpointError,
    LoadReport,
    extract_state_dict,
    infer_model_size,
    load_state_dict,
    preset_config_for,
    read_checkpoint,
)
from .hub.download import fetch_weights, looks_like_local_file
from .model.dfine import DFINE as DFINEModel
from .model_info import ModelInfo, resolve_device

__all__ = [
    "WeightsSource",
    "is_remote_source",
    "config_difference",
    "load_checkpoint",
    "load_model",
    "read_model_weights",
    "resolve_weights",
]

WeightsSource = str | Path  # see the module docstring


def is_remote_source(source: WeightsSource) -> bool:
    """A URL, zoo name or HF hub id: something to download, not a local path."""
    text = str(source)
    return not Path(text).expanduser().exists() and not looks_like_local_file(text)


def resolve_weights(source: WeightsSource) -> Path:
    """A local path for ``source``: the file or folder itself, or the cached download of a URL / zoo name / HF id.

    Raises:
        FileNotFoundError: a local path that does not exist.
        ValueError: an unknown zoo name (the closest names suggested) or a failed download.
    """
    path = Path(source).expanduser()
    if path.exists():
        return path
    text = str(source)
    if looks_like_local_file(text):
        raise FileNotFoundError(f"checkpoint not found: {text} (no such file; a URL or zoo name also works here)")
    return fetch_weights(text)


def _is_hf(path: Path) -> bool:
    if not (path.is_dir() or path.suffix.lower() == ".safetensors"):
        return False  # a torch file
    from .hub.hf import is_hf_checkpoint

    return is_hf_checkpoint(path)


def read_model_weights(
    path: Path, size: str | None = None, fix: str = "pass size= explicitly"
) -> tuple[dict[str, torch.Tensor], ModelInfo]:
    """The train-layout weights in a local file or HF folder and what is known about them."""
    label = str(path)
    if _is_hf(path):
        from .hub.hf import read_hf_checkpoint

        hf = read_hf_checkpoint(path)
        info = ModelInfo.for_config(
            hf.config, size=hf.size, class_names=hf.class_names, source=label, weights_format="hf"
        )
        return hf.state_dict, info
    checkpoint = read_checkpoint(path)
    state, _ = extract_state_dict(checkpoint, path)
    meta = checkpoint.get("dfine") if isinstance(checkpoint, dict) else None
    if isinstance(meta, dict) and isinstance(meta.get("model"), dict):
        config = model_config_from_dict(meta["model"])
        names, ids = meta.get("class_names"), meta.get("category_ids")
        if names is not None and len(names) != config.num_classes:
            names, ids = None, None  # an inconsistent record: fall back to the defaults, never mislabel
        info = ModelInfo.for_config(
            config,
            size=size or infer_model_size(state),
            class_names=names,
            category_ids=ids if ids is not None and len(ids) == config.num_classes else None,
            num_top_queries=int(meta.get("num_top_queries", 300)),
            source=label,
            weights_format="dfine",
        )
        return state, info
    config = preset_config_for(state, path, size, fix)
    return state, ModelInfo.for_config(
        config, size=size or infer_model_size(state), source=label, weights_format="official"
    )


def _random(size: str, num_classes: int | None) -> tuple[DFINEModel, ModelInfo]:
    config = model_config(size, num_classes=num_classes or 80)
    return DFINEModel.from_config(config), ModelInfo.for_config(config, size=size)


def load_model(
    source: WeightsSource,
    *,
    size: str | None = None,
    num_classes: int | None = None,
    device: str | torch.device | None = None,
) -> tuple[DFINEModel, ModelInfo]:
    """A D-FINE model (train layout, eval mode) and its :class:`ModelInfo` from any source (module docstring).

    Args:
        source: a size, a checkpoint, an HF folder, a URL, a zoo name or an HF hub id.
        size: the preset size of an official checkpoint (None: inferred from the weights).
        num_classes: the class count of a random model; for weights, a check (they set it).
        device: where to put the model; None: the CPU.

    Raises:
        FileNotFoundError / ValueError (incl. :class:`CheckpointError`): one line naming the source and the fix.
    """
    if isinstance(source, str) and source.lower() in MODEL_PRESETS and not Path(source).exists():
        model, info = _random(source.lower(), num_classes)
    else:
        path = resolve_weights(source)
        state, info = read_model_weights(path, size, "pass size= (n, s, m, l, x) explicitly")
        if str(source) != str(path):
            info = replace(info, source=str(source))
        if num_classes is not None and num_classes != info.num_classes:
            raise CheckpointError(
                f"{source}: the weights have {info.num_classes} classes, not num_classes={num_classes}; drop "
                "num_classes, or fine-tune them on your classes (train -t / DFINE.train)"
            )
        model = DFINEModel.from_config(info.config)
        load_state_dict(model, state, source, fix="The file's architecture is not a D-FINE preset.")
    model = model.to(resolve_device(device) if device is not None else torch.device("cpu"))
    return model.eval(), info


def load_checkpoint(model: DFINEModel, source: WeightsSource, strict: bool = True) -> LoadReport:
    """Load the weights of any source (a path, URL, zoo name, HF folder or id) into a model you built.

    ``strict=False`` loads what fits and reports the rest (fine-tuning onto other classes).
    """
    path = resolve_weights(source)
    if _is_hf(path):
        state, _ = read_model_weights(path)
        return load_state_dict(model, state, source, source="hf", strict=strict)
    state, entry = extract_state_dict(read_checkpoint(path), path)
    return load_state_dict(model, state, source, source=entry, strict=strict)


def config_difference(own: ModelConfig, other: ModelConfig) -> str | None:
    """The first field where two model configs differ, as ``section.field: a vs b``; None when equal."""

    def flat(config: ModelConfig) -> dict[str, object]:
        items: dict[str, object] = {"num_classes": config.num_classes}
        for section, values in asdict(config).items():
            if isinstance(values, dict):
                items.update({f"{section}.{key}": value for key, value in values.items()})
        return items

    def plain(value: object) -> object:
        return list(value) if isinstance(value, tuple) else value

    mine, theirs = flat(own), flat(other)
    for key in mine:
        a, b = plain(mine[key]), plain(theirs.get(key))
        if a != b:
            return f"{key}: {a!r} vs {b!r}"
    return None

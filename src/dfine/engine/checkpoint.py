"""Checkpoint reading and model loading, compatible with the official D-FINE files.

Accepted layouts: the official solver checkpoint (``{"ema": {"module": sd}, "model": sd, ...}``,
where the EMA weights win as in the official loaders), ``{"model": sd}``, or a bare state_dict.
Files are read with ``torch.load(weights_only=True)``: no code from a checkpoint is ever run.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from ..config.presets import MODEL_PRESETS, ModelConfig, model_config

__all__ = [
    "CheckpointError",
    "LoadReport",
    "read_checkpoint",
    "extract_state_dict",
    "load_checkpoint",
    "load_state_dict",
    "save_atomic",
    "infer_model_size",
]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used, with the file and the fix in the message."""


@dataclass
class LoadReport:
    """What :func:`load_checkpoint` did.

    Attributes:
        source: which entry of the file was used (``ema``, ``model`` or ``state_dict``).
        loaded: keys copied into the model.
        missing: model keys absent from the checkpoint (left as they were).
        unexpected: checkpoint keys the model does not have.
        mismatched: ``key -> (checkpoint shape, model shape)`` for keys skipped for their shape.
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors from '{self.source}'"]
        if self.mismatched:
            lines.append(f"skipped {len(self.mismatched)} with another shape: " + _preview(self.mismatched))
        if self.missing:
            lines.append(f"{len(self.missing)} model keys not in the checkpoint: " + _preview(self.missing))
        if self.unexpected:
            lines.append(f"{len(self.unexpected)} checkpoint keys not in the model: " + _preview(self.unexpected))
        return "; ".join(lines)


def _preview(keys, limit: int = 6) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... (+{len(keys) - limit} more)" if len(keys) > limit else "")


def read_checkpoint(path: str | Path) -> Any:
    """``torch.load`` a file safely (``weights_only=True``) with errors that name the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; pass the checkpoint file (e.g. {path}/best.pth)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty (0 bytes): an interrupted write or download; use a good copy")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: cannot be read as plain tensors ({_unpickling_reason(err)}). Either it is not a PyTorch "
            "checkpoint, or it stores Python objects, which are not unpickled here (that could run code); "
            "re-save it as a plain dict of tensors."
        ) from None
    except Exception as err:  # the unpickler raises many kinds (KeyError, RuntimeError, EOFError...)
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {_first_line(err)}"
        ) from None


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def _unpickling_reason(err: pickle.UnpicklingError) -> str:
    """The unpickler's own reason, without torch's advice to load with ``weights_only=False`` (the unsafe load)."""
    text = str(err)
    if "WeightsUnpickler error:" in text:  # torch puts the reason after this marker, on the same or a later line
        text = text.split("WeightsUnpickler error:", 1)[1]
    for line in text.splitlines():
        line = line.split(". Please use", 1)[0].strip()
        if line and "weights_only" not in line.lower() and "weights only" not in line.lower():
            return line
    return "the safe unpickler refused it"


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def extract_state_dict(checkpoint: Any, path: str | Path = "<checkpoint>") -> tuple[dict[str, torch.Tensor], str]:
    """The model weights inside a loaded checkpoint and the entry they came from.

    The EMA weights win when present (as in the official inference and export tools). A ``module.``
    prefix left by DistributedDataParallel is removed.
    """
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, found {type(checkpoint).__name__}")
    ema = checkpoint.get("ema")
    if isinstance(ema, dict) and _is_state_dict(ema.get("module")):
        state, source = ema["module"], "ema"
    elif _is_state_dict(checkpoint.get("model")):
        state, source = checkpoint["model"], "model"
    elif _is_state_dict(checkpoint):
        state, source = checkpoint, "state_dict"
    else:
        raise CheckpointError(
            f"{path}: no model weights found (looked for 'ema.module', 'model', or a plain state_dict; "
            f"top-level keys: {sorted(checkpoint)[:8]})"
        )
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state, source


def infer_model_size(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """The preset size (n, s, m, l, x) whose layout a checkpoint-layout state_dict has, or None.

    Compared with each preset: the encoder's input channels and hidden width (from the
    ``encoder.input_proj.{i}.conv.weight`` shapes) and the number of decoder layers. The class count
    does not matter.
    """
    projections = []
    while (key := f"encoder.input_proj.{len(projections)}.conv.weight") in state_dict:
        projections.append(state_dict[key])
    if not projections:
        return None
    in_channels = tuple(int(weight.shape[1]) for weight in projections)
    hidden_dim = int(projections[0].shape[0])
    prefix = "decoder.decoder.layers."
    num_layers = len({key[len(prefix) :].split(".")[0] for key in state_dict if key.startswith(prefix)})
    for size, cfg in MODEL_PRESETS.items():
        if (cfg.encoder.in_channels, cfg.encoder.hidden_dim, cfg.decoder.num_layers) == (
            in_channels,
            hidden_dim,
            num_layers,
        ):
            return size
    return None


SCORE_HEAD_KEY = "decoder.enc_score_head.weight"  # [num_classes, hidden]: the class count of a checkpoint


def preset_config_for(
    state_dict: Mapping[str, torch.Tensor],
    source: str | Path,
    size: str | None = None,
    fix: str = "pass the model size explicitly",
) -> ModelConfig:
    """The preset model config a checkpoint-layout state_dict fits: its size (inferred unless given)
    and its class count (the rows of the encoder's score head).

    Raises:
        CheckpointError: not a D-FINE state_dict, or no preset has its layout (``fix`` says what to do).
    """
    if SCORE_HEAD_KEY not in state_dict:
        raise CheckpointError(f"{source}: no {SCORE_HEAD_KEY!r}, so this is not a D-FINE checkpoint")
    if size is None:
        size = infer_model_size(state_dict)
        if size is None:
            raise CheckpointError(f"{source}: the weights match no D-FINE size ({', '.join(MODEL_PRESETS)}); {fix}")
    return model_config(size, num_classes=int(state_dict[SCORE_HEAD_KEY].shape[0]))


def describe_difference(theirs: Mapping[str, torch.Tensor], ours: Mapping[str, torch.Tensor]) -> str:
    """How a checkpoint's state_dict differs from a model's, in words: size, class count, else the first key."""

    def size_of(state: Mapping[str, torch.Tensor]) -> str:
        size = infer_model_size(state)
        return f"D-FINE-{size.upper()}" if size else "a non-preset layout"

    if size_of(theirs) != size_of(ours):
        return f"{size_of(theirs)} weights, {size_of(ours)} model"
    if SCORE_HEAD_KEY in theirs and SCORE_HEAD_KEY in ours:
        counts = int(theirs[SCORE_HEAD_KEY].shape[0]), int(ours[SCORE_HEAD_KEY].shape[0])
        if counts[0] != counts[1]:
            return f"{counts[0]} classes in the weights, num_classes {counts[1]} in the config"
    for key, value in ours.items():
        if key not in theirs:
            return f"the weights lack {key}"
        if tuple(theirs[key].shape) != tuple(value.shape):
            return f"{key}: {list(theirs[key].shape)} in the weights, {list(value.shape)} in the model"
    extra = next((key for key in theirs if key not in ours), None)
    return f"the weights have {extra}, the model does not" if extra else "same layout"


def _size_hint(state: dict[str, torch.Tensor]) -> str:
    """A guess at the D-FINE size a state_dict belongs to, for error messages."""
    size = infer_model_size(state)
    return f" The checkpoint looks like D-FINE-{size.upper()}." if size else ""


def load_checkpoint(
    model: nn.Module,
    path: str | Path,
    strict: bool = True,
    fix: str = "Build the matching size, or pass strict=False to load only what fits (fine-tuning).",
) -> LoadReport:
    """Load weights from ``path`` into ``model``.

    Args:
        model: a D-FINE model (train layout, i.e. before ``deploy()``).
        path: an official or dfine checkpoint, or a bare state_dict file.
        strict: every key must match in name and shape, else :class:`CheckpointError` lists the
            missing, unexpected and shape-mismatched keys. With ``strict=False`` (fine-tuning), all
            keys that match are loaded and the rest is reported (e.g. class heads of another class
            count stay as initialized).
        fix: the last sentence of the strict error: what the caller's user should do instead.

    Returns:
        A :class:`LoadReport`.
    """
    state, source = extract_state_dict(read_checkpoint(path), path)
    return load_state_dict(model, state, path, source=source, strict=strict, fix=fix)


def load_state_dict(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    path: str | Path,
    *,
    source: str = "state_dict",
    strict: bool = True,
    fix: str = "Build the matching size, or pass strict=False to load only what fits (fine-tuning).",
) -> LoadReport:
    """:func:`load_checkpoint` for weights already read (``path`` names them in errors)."""
    own = model.state_dict()
    report = LoadReport(source=source)
    to_load = {}
    for key, value in state.items():
        if key not in own:
            report.unexpected.append(key)
        elif own[key].shape != value.shape:
            report.mismatched[key] = (tuple(value.shape), tuple(own[key].shape))
        else:
            to_load[key] = value
    report.missing = [k for k in own if k not in state]
    if strict and (report.missing or report.unexpected or report.mismatched):
        problems = []
        if report.mismatched:
            problems.append(
                "shape mismatch: "
                + _preview(f"{k} {list(a)} in file vs {list(b)} in model" for k, (a, b) in report.mismatched.items())
            )
        if report.missing:
            problems.append("missing: " + _preview(report.missing))
        if report.unexpected:
            problems.append("unexpected: " + _preview(report.unexpected))
        raise CheckpointError(
            f"{path} does not fit this model ({len(own)} keys): "
            + "; ".join(problems)
            + "."
            + _size_hint(dict(state))
            + f" {fix}"
        )
    model.load_state_dict(to_load, strict=False)
    report.loaded = list(to_load)
    return report


def remove_orphaned_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files that a process killed inside :func:`save_atomic` (or
    :func:`save_text_atomic`) left in ``folder``.

    Only this module's own pattern (``.NAME.pth.XXXX.tmp``, ``.log.txt.XXXX.tmp``) is touched; returns what was
    removed.
    """
    folder = Path(folder)
    removed = []
    patterns = (".*.pth.*.tmp", ".log.txt.*.tmp")
    for path in sorted(p for pattern in patterns for p in folder.glob(pattern)) if folder.is_dir() else []:
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``.

    A crash or a full disk never leaves a truncated checkpoint under the final name.
    """
    return _replace_atomically(Path(path), lambda handle: torch.save(obj, handle))


def save_text_atomic(text: str, path: str | Path) -> Path:
    """Replace the text file ``path`` as :func:`save_atomic` replaces a checkpoint (all or nothing)."""
    return _replace_atomically(Path(path), lambda handle: handle.write(text.encode("utf-8")))


def _replace_atomically(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        cause = _os_error_behind(err)
        if cause is not None and cause is not err:  # torch.save turns a failed write into a RuntimeError
            raise cause from None
        raise
    return path


def _os_error_behind(err: BaseException | None) -> OSError | None:
    """The OSError (disk full, file too large...) that ``err`` was raised while handling, if any."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None

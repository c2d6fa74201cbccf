"""Fine-tuning from weights of another dataset: keep what fits, map class rows by class name."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .checkpoint import extract_state_dict, read_checkpoint

__all__ = ["FinetuneReport", "load_for_finetuning", "CLASS_ROW_PREFIXES"]

# Parameters whose first dimension is indexed by class (denoising_class_embed has one padding row more).
CLASS_ROW_PREFIXES = ("decoder.enc_score_head.", "decoder.dec_score_head.", "decoder.denoising_class_embed.")


@dataclass
class FinetuneReport:
    """What fine-tuning initialisation did.

    Attributes:
        loaded: keys copied as they are.
        class_mapped: class names whose head rows came from the checkpoint.
        class_new: class names whose head rows keep their fresh initialisation.
        skipped: keys not loaded (other shape, no class names to map by), with the reason.
    """

    loaded: list[str] = field(default_factory=list)
    class_mapped: list[str] = field(default_factory=list)
    class_new: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        parts = [f"loaded {len(self.loaded)} tensors"]
        if self.class_mapped or self.class_new:
            parts.append(f"class heads: {len(self.class_mapped)} classes mapped by name, {len(self.class_new)} new")
            if self.class_new:
                parts.append("new: " + ", ".join(self.class_new[:10]) + (" ..." if len(self.class_new) > 10 else ""))
        if self.skipped:
            parts.append(f"skipped {len(self.skipped)}: " + ", ".join(list(self.skipped)[:6]))
        return "; ".join(parts)


def _is_class_row(key: str) -> bool:
    return key.startswith(CLASS_ROW_PREFIXES)


def load_for_finetuning(model: nn.Module, path: str | Path, class_names: list[str] | None) -> FinetuneReport:
    """Initialise ``model`` from a checkpoint trained on possibly other classes.

    Every key with the same shape loads as is, except the class-indexed head rows when both sides
    know their class names and the names differ: then rows are copied by name and unmatched classes
    keep their fresh initialisation. Checkpoints without names (official files) are mapped by name
    when they have the 80 COCO classes; otherwise class heads of another size are re-initialised.
    """
    checkpoint = read_checkpoint(path)
    state, _ = extract_state_dict(checkpoint, path)
    meta = checkpoint.get("dfine", {}) if isinstance(checkpoint, dict) else {}
    old_names = meta.get("class_names")
    if old_names is None:
        enc = state.get("decoder.enc_score_head.weight")
        if enc is not None and enc.shape[0] == 80:
            from ..categories import COCO_CLASS_NAMES

            old_names = list(COCO_CLASS_NAMES)
    own = model.state_dict()
    report = FinetuneReport()
    mapping = None
    if class_names is not None and old_names is not None and list(old_names) != list(class_names):
        index = {name: i for i, name in enumerate(old_names)}
        mapping = [(new_i, index[name]) for new_i, name in enumerate(class_names) if name in index]
        report.class_mapped = [class_names[n] for n, _ in mapping]
        report.class_new = [n for n in class_names if n not in index]

    to_load = {}
    for key, value in state.items():
        if key not in own:
            report.skipped[key] = "not in model"
            continue
        target = own[key]
        if _is_class_row(key) and value.shape[1:] != target.shape[1:]:  # another size: rows of another width
            report.skipped[key] = f"shape {list(value.shape)} vs {list(target.shape)}"
        elif _is_class_row(key) and mapping is not None:
            merged = target.clone()
            for new_i, old_i in mapping:
                merged[new_i] = value[old_i]
            if key.startswith("decoder.denoising_class_embed.") and value.shape[0] == len(old_names) + 1:
                merged[-1] = value[-1]  # the padding ("no class") row
            to_load[key] = merged
        elif target.shape == value.shape:
            to_load[key] = value
        else:
            report.skipped[key] = f"shape {list(value.shape)} vs {list(target.shape)}"
    with torch.no_grad():
        model.load_state_dict(to_load, strict=False)
    report.loaded = list(to_load)
    return report

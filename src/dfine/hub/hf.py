"""Hugging Face ``transformers`` D-FINE checkpoints (``DFineForObjectDetection``) to and from dfine.

A Hugging Face checkpoint is a folder holding ``config.json`` and ``model.safetensors``, as
``save_pretrained`` writes it. Its tensors are the official weights under other names: one
declarative table (:data:`_RENAMES`) maps the names both ways, the self-attention ``q/k/v``
projections that transformers keeps apart are joined into ``nn.MultiheadAttention``'s
``in_proj_weight``/``in_proj_bias``, and the decoder heads, which transformers stores twice
(``class_embed.*`` and ``model.decoder.class_embed.*``), are read once. The anchors and the valid
mask are not stored by transformers; dfine computes them for the input size, as it does at build.

The names on disk are those ``save_pretrained`` writes in transformers 4.x and 5.x alike (5.x renames
some modules in memory, e.g. ``o_proj`` and ``encoder.aifi``, and maps them back when saving);
both spellings are read. ``transformers`` itself is never imported: ``config.json`` is plain JSON.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..config.presets import MODEL_PRESETS, ModelConfig, model_config
from ..engine.checkpoint import CheckpointError, infer_model_size
from ..model.decoder import LQE_HIDDEN, LQE_LAYERS, LQE_TOPK
from ..model.dfine import DFINE
from ..model.hgnetv2 import HGNETV2_ARCHS

__all__ = ["HFCheckpoint", "is_hf_checkpoint", "read_hf_checkpoint", "save_hf_checkpoint"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_TYPE = "d_fine"
SCORE_HEAD_KEY = "decoder.enc_score_head.weight"  # present in every D-FINE state_dict

# (official name, Hugging Face name) templates. ``{path}`` stands for one or more key segments,
# any other ``{name}`` for exactly one. Order matters only where two templates could both match.
_ENCODER_BLOCK_PARTS = (
    ("cv1", "conv1"),  # RepNCSPELAN4: 1x1 split conv
    ("cv2.0", "csp_rep1"),  # first CSP branch ...
    ("cv2.1", "conv2"),  # ... and its 3x3 conv
    ("cv3.0", "csp_rep2"),
    ("cv3.1", "conv3"),
    ("cv4", "conv4"),  # 1x1 fusion of the concatenated branches
)
_RENAMES: tuple[tuple[str, str], ...] = (
    # HGNetv2 backbone
    ("backbone.stem.{m}.conv.{p}", "model.backbone.model.embedder.{m}.convolution.{p}"),
    ("backbone.stem.{m}.bn.{p}", "model.backbone.model.embedder.{m}.normalization.{p}"),
    ("backbone.stem.{m}.lab.{p}", "model.backbone.model.embedder.{m}.lab.{p}"),
    ("backbone.stages.{path}.conv.{p}", "model.backbone.model.encoder.stages.{path}.convolution.{p}"),
    ("backbone.stages.{path}.bn.{p}", "model.backbone.model.encoder.stages.{path}.normalization.{p}"),
    ("backbone.stages.{path}.lab.{p}", "model.backbone.model.encoder.stages.{path}.lab.{p}"),
    # hybrid encoder
    ("encoder.input_proj.{i}.conv.{p}", "model.encoder_input_proj.{i}.0.{p}"),
    ("encoder.input_proj.{i}.norm.{p}", "model.encoder_input_proj.{i}.1.{p}"),
    ("encoder.encoder.{i}.layers.{j}.self_attn.{path}", "model.encoder.encoder.{i}.layers.{j}.self_attn.{path}"),
    ("encoder.encoder.{i}.layers.{j}.linear1.{p}", "model.encoder.encoder.{i}.layers.{j}.fc1.{p}"),
    ("encoder.encoder.{i}.layers.{j}.linear2.{p}", "model.encoder.encoder.{i}.layers.{j}.fc2.{p}"),
    ("encoder.encoder.{i}.layers.{j}.norm1.{p}", "model.encoder.encoder.{i}.layers.{j}.self_attn_layer_norm.{p}"),
    ("encoder.encoder.{i}.layers.{j}.norm2.{p}", "model.encoder.encoder.{i}.layers.{j}.final_layer_norm.{p}"),
    ("encoder.lateral_convs.{path}", "model.encoder.lateral_convs.{path}"),
    *(
        (f"encoder.{blocks}.{{i}}.{ours}.{{path}}", f"model.encoder.{blocks}.{{i}}.{theirs}.{{path}}")
        for blocks in ("fpn_blocks", "pan_blocks")
        for ours, theirs in _ENCODER_BLOCK_PARTS
    ),
    ("encoder.downsample_convs.{i}.0.cv1.{path}", "model.encoder.downsample_convs.{i}.conv1.{path}"),
    ("encoder.downsample_convs.{i}.0.cv2.{path}", "model.encoder.downsample_convs.{i}.conv2.{path}"),
    # decoder
    ("decoder.input_proj.{i}.conv.{p}", "model.decoder_input_proj.{i}.0.{p}"),
    ("decoder.input_proj.{i}.norm.{p}", "model.decoder_input_proj.{i}.1.{p}"),
    ("decoder.decoder.layers.{i}.self_attn.{path}", "model.decoder.layers.{i}.self_attn.{path}"),
    ("decoder.decoder.layers.{i}.norm1.{p}", "model.decoder.layers.{i}.self_attn_layer_norm.{p}"),
    ("decoder.decoder.layers.{i}.cross_attn.{path}", "model.decoder.layers.{i}.encoder_attn.{path}"),
    ("decoder.decoder.layers.{i}.gateway.{path}", "model.decoder.layers.{i}.gateway.{path}"),
    ("decoder.decoder.layers.{i}.linear1.{p}", "model.decoder.layers.{i}.fc1.{p}"),
    ("decoder.decoder.layers.{i}.linear2.{p}", "model.decoder.layers.{i}.fc2.{p}"),
    ("decoder.decoder.layers.{i}.norm3.{p}", "model.decoder.layers.{i}.final_layer_norm.{p}"),
    ("decoder.decoder.lqe_layers.{path}", "model.decoder.lqe_layers.{path}"),
    ("decoder.up", "model.decoder.up"),
    ("decoder.reg_scale", "model.decoder.reg_scale"),
    ("decoder.query_pos_head.{path}", "model.decoder.query_pos_head.{path}"),
    ("decoder.pre_bbox_head.{path}", "model.decoder.pre_bbox_head.{path}"),
    ("decoder.dec_score_head.{path}", "model.decoder.class_embed.{path}"),
    ("decoder.dec_bbox_head.{path}", "model.decoder.bbox_embed.{path}"),
    ("decoder.denoising_class_embed.{p}", "model.denoising_class_embed.{p}"),
    ("decoder.tgt_embed.{p}", "model.weight_embedding.{p}"),
    ("decoder.enc_output.proj.{p}", "model.enc_output.0.{p}"),
    ("decoder.enc_output.norm.{p}", "model.enc_output.1.{p}"),
    ("decoder.enc_score_head.{p}", "model.enc_score_head.{p}"),
    ("decoder.enc_bbox_head.{path}", "model.enc_bbox_head.{path}"),
)
# official keys transformers does not store: the second registration of a shared Parameter ...
_ALIASES = {"decoder.decoder.up": "decoder.up", "decoder.decoder.reg_scale": "decoder.reg_scale"}
# ... and the buffers dfine computes for eval_spatial_size (BatchNorm step counters, absent where
# transformers freezes the backbone norms, are likewise taken from a freshly built model)
_COMPUTED = ("decoder.anchors", "decoder.valid_mask")
# transformers 5.x in-memory names -> the on-disk names save_pretrained writes
_MEMORY_TO_DISK = (
    (re.compile(r"\.o_proj\."), ".out_proj."),
    (re.compile(r"(layers\.\d+)\.mlp\.layers\.0\."), r"\1.fc1."),
    (re.compile(r"(layers\.\d+)\.mlp\.layers\.1\."), r"\1.fc2."),
    (re.compile(r"encoder\.aifi\.(\d+)\.layers\."), r"encoder.encoder.\1.layers."),
)
_QKV = ("q_proj", "k_proj", "v_proj")
_HEADS = ("class_embed", "bbox_embed")  # the decoder heads transformers also keeps at the top level
_TOP_LEVEL_HEADS = tuple(f"{head}." for head in _HEADS)
_DECODER_HEADS = tuple(f"model.decoder.{head}." for head in _HEADS)

# Hugging Face config field -> the dfine (section, field)s it sets
_CONFIG_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "encoder_in_channels": (("encoder", "in_channels"),),
    "feat_strides": (("encoder", "feat_strides"), ("decoder", "feat_strides")),
    "encoder_hidden_dim": (("encoder", "hidden_dim"),),
    "encoder_attention_heads": (("encoder", "nhead"),),
    "encoder_ffn_dim": (("encoder", "dim_feedforward"),),
    "encoder_activation_function": (("encoder", "enc_act"),),
    "encode_proj_layers": (("encoder", "use_encoder_idx"),),
    "encoder_layers": (("encoder", "num_encoder_layers"),),
    "positional_encoding_temperature": (("encoder", "pe_temperature"),),
    "hidden_expansion": (("encoder", "expansion"),),
    "depth_mult": (("encoder", "depth_mult"),),
    "activation_function": (("encoder", "act"),),
    "d_model": (("decoder", "hidden_dim"),),
    "num_queries": (("decoder", "num_queries"),),
    "decoder_in_channels": (("decoder", "feat_channels"),),
    "num_feature_levels": (("decoder", "num_levels"),),
    "decoder_n_points": (("decoder", "num_points"),),
    "decoder_attention_heads": (("decoder", "nhead"),),
    "decoder_layers": (("decoder", "num_layers"),),
    "decoder_ffn_dim": (("decoder", "dim_feedforward"),),
    "decoder_activation_function": (("decoder", "activation"),),
    "num_denoising": (("decoder", "num_denoising"),),
    "label_noise_ratio": (("decoder", "label_noise_ratio"),),
    "box_noise_scale": (("decoder", "box_noise_scale"),),
    "learn_initial_query": (("decoder", "learn_query_content"),),
    "eval_idx": (("decoder", "eval_idx"),),
    "decoder_method": (("decoder", "cross_attn_method"),),
    "max_num_bins": (("decoder", "reg_max"),),
    "reg_scale": (("decoder", "reg_scale"),),
    "layer_scale": (("decoder", "layer_scale"),),
}
# Hugging Face config fields whose value dfine fixes in code
_FIXED_FIELDS: dict[str, Any] = {
    "decoder_offset_scale": 0.5,
    "top_prob_values": LQE_TOPK,
    "lqe_hidden_dim": LQE_HIDDEN,
    "lqe_layers": LQE_LAYERS,
    "normalize_before": False,
    "layer_norm_eps": 1e-5,
    "batch_norm_eps": 1e-5,
}
# HGNetv2 config fields that fix the backbone's architecture
_BACKBONE_FIELDS = (
    "stem_channels",
    "stage_in_channels",
    "stage_mid_channels",
    "stage_out_channels",
    "stage_num_blocks",
    "stage_downsample",
    "stage_light_block",
    "stage_kernel_size",
    "stage_numb_of_layers",
    "use_learnable_affine_block",
    "out_indices",
    "stem_strides",
    "stage_downsample_strides",
    "hidden_act",
)


@dataclass(frozen=True, eq=False)
class HFCheckpoint:
    """A Hugging Face D-FINE checkpoint, converted to dfine.

    Attributes:
        config: the dfine preset of ``size`` with the class count and the input (anchor) size of
            the Hugging Face config, and any other setting it changes.
        state_dict: the weights in the official train layout (``DFINE.from_config(config)`` loads
            them with ``strict=True``).
        class_names: from ``id2label``, ordered by id.
        size: the preset size (n, s, m, l or x).
        path: the folder or file that was read.
    """

    config: ModelConfig
    state_dict: dict[str, torch.Tensor]
    class_names: tuple[str, ...]
    size: str
    path: Path


# ---------------------------------------------------------------------------- key renaming


def _compile(template: str) -> re.Pattern:
    """``"a.{i}.b.{path}"`` -> a regex with one named group per placeholder."""
    parts = re.split(r"\{(\w+)\}", template)
    return re.compile(
        "".join(
            re.escape(part) if k % 2 == 0 else f"(?P<{part}>{'.+' if part == 'path' else '[^.]+'})"
            for k, part in enumerate(parts)
        )
    )


_TO_HF = tuple((_compile(ours), theirs) for ours, theirs in _RENAMES)
_FROM_HF = tuple((_compile(theirs), ours) for ours, theirs in _RENAMES)


def _rename(key: str, rules: tuple[tuple[re.Pattern, str], ...]) -> str | None:
    for pattern, target in rules:
        match = pattern.fullmatch(key)
        if match:
            return target.format(**match.groupdict())
    return None


def _join_qkv(tensors: dict[str, torch.Tensor], source: Path) -> dict[str, torch.Tensor]:
    """``X.q_proj/k_proj/v_proj.{weight,bias}`` -> ``X.in_proj_{weight,bias}`` ([3D, D] / [3D])."""
    joined = {}
    for key, value in tensors.items():
        parent, _, leaf = key.rpartition(".")
        module, _, proj = parent.rpartition(".")
        if proj not in _QKV:
            joined[key] = value
        elif proj == "q_proj":
            names = [f"{module}.{name}.{leaf}" for name in _QKV]
            absent = [name for name in names if name not in tensors]
            if absent:
                raise CheckpointError(f"{source}: {absent[0]!r} is missing; the file is incomplete, save it again")
            joined[f"{module}.in_proj_{leaf}"] = torch.cat([tensors[name] for name in names])
    return joined


def _split_qkv(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`_join_qkv`."""
    split = {}
    for key, value in tensors.items():
        module, _, leaf = key.rpartition(".")
        if leaf.startswith("in_proj_"):
            for name, part in zip(_QKV, value.chunk(3)):
                split[f"{module}.{name}.{leaf[len('in_proj_') :]}"] = part
        else:
            split[key] = value
    return split


def _decoder_heads(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One copy of each decoder head, under ``model.decoder.{class,bbox}_embed.{i}``.

    transformers keeps the heads twice, tied when ``tie_word_embeddings`` (its default) is set, and
    ``save_pretrained`` then writes only the ``model.decoder`` copy.
    """
    heads = {k: v for k, v in tensors.items() if not k.startswith(_TOP_LEVEL_HEADS)}
    for key, value in tensors.items():
        if key.startswith(_TOP_LEVEL_HEADS):
            heads.setdefault(f"model.decoder.{key}", value)
    return heads


def _official_names(tensors: dict[str, torch.Tensor], source: Path) -> dict[str, torch.Tensor]:
    """Hugging Face tensors -> official names; unknown names raise :class:`CheckpointError`."""
    score_head = _rename(SCORE_HEAD_KEY, _TO_HF)
    if score_head not in tensors:
        raise CheckpointError(
            f"{source}: no D-FINE weights (no {score_head!r}; it holds {_preview(tensors)}); "
            "this file belongs to another model, pass a DFineForObjectDetection checkpoint"
        )
    on_disk = {}
    for key, value in tensors.items():
        for pattern, replacement in _MEMORY_TO_DISK:
            key = pattern.sub(replacement, key)
        on_disk[key] = value
    on_disk = _decoder_heads(on_disk)
    state, unknown = {}, []
    for key, value in _join_qkv(on_disk, source).items():
        ours = _rename(key, _FROM_HF)
        if ours is None:
            unknown.append(key)
        else:
            state[ours] = value
    if unknown:
        raise CheckpointError(
            f"{source}: {len(unknown)} tensors that D-FINE does not have ({_preview(unknown)}); "
            "pass a checkpoint saved by DFineForObjectDetection"
        )
    for alias, key in _ALIASES.items():
        if key in state:
            state[alias] = state[key]
    return state


def _hf_names(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official train-layout state_dict -> the tensors ``save_pretrained`` writes."""
    tensors = {}
    for key, value in state.items():
        if key in _ALIASES or key in _COMPUTED:
            continue
        theirs = _rename(key, _TO_HF)
        if theirs is None:
            raise ValueError(
                f"save_hf_checkpoint: the model has a tensor {key!r} with no Hugging Face name; "
                "pass the train-layout model (before deploy())"
            )
        tensors[theirs] = value
    tensors = _split_qkv(tensors)
    for key in list(tensors):
        if key.startswith(_DECODER_HEADS):
            tensors[key[len("model.decoder.") :]] = tensors[key]
    tensors["model.decoder.reg_scale"] = tensors["model.decoder.reg_scale"].float()  # a float Parameter there
    # safetensors stores neither views nor shared storage
    return {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}


def _preview(keys, limit: int = 4) -> str:
    keys = list(keys)
    return ", ".join(keys[:limit]) + (f", ... (+{len(keys) - limit} more)" if len(keys) > limit else "")


# ---------------------------------------------------------------------------- configs


def _backbone_config(cfg: ModelConfig) -> dict[str, Any]:
    """The ``hgnet_v2`` backbone_config of a dfine config."""
    arch = HGNETV2_ARCHS[cfg.backbone.name]
    stages = arch.stages
    return {
        "model_type": "hgnet_v2",
        "num_channels": arch.stem_channels[0],
        "embedding_size": arch.stem_channels[2],
        "depths": [s.num_blocks for s in stages],
        "hidden_sizes": [s.out_channels for s in stages],
        "hidden_act": "relu",
        "stem_channels": list(arch.stem_channels),
        "stem_strides": [2, 1, 1, 2, 1],  # stem1 and stem3 halve the resolution
        "stage_in_channels": [s.in_channels for s in stages],
        "stage_mid_channels": [s.mid_channels for s in stages],
        "stage_out_channels": [s.out_channels for s in stages],
        "stage_num_blocks": [s.num_blocks for s in stages],
        "stage_downsample": [s.downsample for s in stages],
        "stage_downsample_strides": [2, 2, 2, 2],
        "stage_light_block": [s.light_block for s in stages],
        "stage_kernel_size": [s.kernel_size for s in stages],
        "stage_numb_of_layers": [s.layer_num for s in stages],
        "use_learnable_affine_block": cfg.backbone.use_lab,
        "out_indices": [i + 1 for i in cfg.backbone.return_idx],  # index 0 is the stem there
        "out_features": [f"stage{i + 1}" for i in cfg.backbone.return_idx],
    }


def _json_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _hf_config_dict(cfg: ModelConfig, class_names: Sequence[str]) -> dict[str, Any]:
    """The ``config.json`` of ``DFineForObjectDetection`` for a dfine config."""
    sections = {"encoder": cfg.encoder, "decoder": cfg.decoder}
    config: dict[str, Any] = {
        "architectures": ["DFineForObjectDetection"],
        "model_type": MODEL_TYPE,
        "backbone_config": _backbone_config(cfg),
        "freeze_backbone_batch_norms": cfg.backbone.freeze_norm,
    }
    for name, ((section, field_name), *_) in _CONFIG_FIELDS.items():
        config[name] = _json_value(getattr(sections[section], field_name))
    config["reg_scale"] = float(cfg.decoder.reg_scale)  # a float field there, an int in the official YAML
    config["positional_encoding_temperature"] = round(cfg.encoder.pe_temperature)  # an int field there
    config.update(_FIXED_FIELDS)
    config.update(
        {
            "up": 0.5,
            # transformers drops the AIFI position embedding in eval mode when eval_size is set
            "eval_size": None,
            "anchor_image_size": _json_value(cfg.decoder.eval_spatial_size),
            "id2label": {str(i): name for i, name in enumerate(class_names)},
            "label2id": {name: i for i, name in enumerate(class_names)},
            # the heads are written twice (top level and model.decoder), as untied save_pretrained does
            "tie_word_embeddings": False,
            "is_encoder_decoder": True,
        }
    )
    return config


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9)
    return a == b


def _check_backbone(hf_config: Mapping[str, Any], cfg: ModelConfig, size: str, source: Path) -> None:
    theirs = hf_config.get("backbone_config")
    if not isinstance(theirs, dict) or theirs.get("model_type", "hgnet_v2") != "hgnet_v2":
        raise CheckpointError(
            f"{source}: backbone_config is not an hgnet_v2 config; dfine builds D-FINE on HGNetv2 only"
        )
    ours = _backbone_config(cfg)
    for name in _BACKBONE_FIELDS:
        if name in theirs and not _same(theirs[name], ours[name]):
            raise CheckpointError(
                f"{source}: backbone_config.{name} is {theirs[name]}, but D-FINE-{size.upper()} uses {ours[name]} "
                f"(HGNetv2-{cfg.backbone.name}); dfine supports the official backbones only"
            )


def _input_size(hf_config: Mapping[str, Any], default: tuple[int, int] | None) -> tuple[int, int] | None:
    """The anchor size (``anchor_image_size``, else ``eval_size``) as (height, width)."""
    for name in ("anchor_image_size", "eval_size"):
        value = hf_config.get(name)
        if isinstance(value, int):
            return (value, value)
        if isinstance(value, (list, tuple)) and len(value) == 2:
            return (int(value[0]), int(value[1]))
    return default


def _model_config(hf_config: Mapping[str, Any], size: str, num_classes: int, source: Path) -> ModelConfig:
    """The preset of ``size`` with every setting the Hugging Face config changes."""
    preset = model_config(size, num_classes=num_classes)
    for name, expected in _FIXED_FIELDS.items():
        if name in hf_config and not _same(hf_config[name], expected):
            raise CheckpointError(f"{source}: {name} is {hf_config[name]}; dfine supports only {expected}")
    sections = {"encoder": {}, "decoder": {}}
    current = {"encoder": preset.encoder, "decoder": preset.decoder}
    for name, targets in _CONFIG_FIELDS.items():
        if name not in hf_config:
            continue
        value = hf_config[name]
        for section, field_name in targets:
            if field_name == "num_points" and isinstance(value, int):
                value = [value] * preset.decoder.num_levels
            if not _same(value, getattr(current[section], field_name)):
                sections[section][field_name] = tuple(value) if isinstance(value, list) else value
    try:
        cfg = model_config(
            size,
            num_classes=num_classes,
            eval_spatial_size=_input_size(hf_config, preset.decoder.eval_spatial_size),
            **{name: values for name, values in sections.items() if values},
        )
    except ValueError as err:
        raise CheckpointError(f"{source}: describes no valid D-FINE ({err})") from None
    _check_backbone(hf_config, cfg, size, source)
    return cfg


def _class_names(hf_config: Mapping[str, Any], num_classes: int, source: Path) -> tuple[str, ...]:
    id2label = hf_config.get("id2label") or {}
    try:
        labels = {int(k): str(v) for k, v in id2label.items()}
    except (AttributeError, TypeError, ValueError):
        raise CheckpointError(f"{source}: id2label must map class ids to names") from None
    if sorted(labels) != list(range(num_classes)):
        raise CheckpointError(
            f"{source}: id2label has ids {_preview(map(str, sorted(labels)))} but the weights have {num_classes} "
            f"classes; make id2label map 0..{num_classes - 1} to the class names"
        )
    return tuple(labels[i] for i in range(num_classes))


# ---------------------------------------------------------------------------- files


def _files(path: Path) -> tuple[Path, Path]:
    """``(config.json, model.safetensors)`` of a checkpoint folder or weights file."""
    if path.name == CONFIG_NAME and path.is_file():
        path = path.parent
    if path.is_dir():
        config, weights = path / CONFIG_NAME, path / WEIGHTS_NAME
        if not weights.is_file():
            raise CheckpointError(f"{path}: no {WEIGHTS_NAME} in this folder; pass a folder written by save_pretrained")
    elif path.suffix == ".safetensors":
        config, weights = path.parent / CONFIG_NAME, path
        if not weights.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
    elif not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    else:
        raise CheckpointError(
            f"{path}: not a Hugging Face checkpoint; pass a folder with {CONFIG_NAME} and {WEIGHTS_NAME}"
        )
    if not config.is_file():
        raise CheckpointError(
            f"{weights}: no {CONFIG_NAME} beside it; put the model's {CONFIG_NAME} in {config.parent}"
        )
    return config, weights


def is_hf_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is laid out as a Hugging Face checkpoint: a folder with ``config.json`` and
    ``model.safetensors``, or a ``.safetensors`` file with ``config.json`` in its folder.

    Only the layout is checked; :func:`read_hf_checkpoint` checks the contents.
    """
    path = Path(path)
    if path.is_dir():
        return (path / CONFIG_NAME).is_file() and (path / WEIGHTS_NAME).is_file()
    return path.suffix == ".safetensors" and path.is_file() and (path.parent / CONFIG_NAME).is_file()


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not readable JSON ({err}); use the config.json saved with the model") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type != MODEL_TYPE:
        raise CheckpointError(
            f"{path}: model_type is {model_type!r}, not {MODEL_TYPE!r}, so this is not a D-FINE config; "
            "pass a DFineForObjectDetection checkpoint"
        )
    return config


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        reason = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise CheckpointError(
            f"{path}: not a readable safetensors file (truncated or corrupt?): {reason}; download or save it again"
        ) from None


def _expected_state(cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """The state_dict of ``DFINE.from_config(cfg)``: its keys, shapes, dtypes and computed buffers."""
    with torch.random.fork_rng(devices=[]):  # building initialises weights: leave the caller's RNG as it was
        return DFINE.from_config(cfg).state_dict()


def _fit(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], what: str, fix: str
) -> dict[str, torch.Tensor]:
    """``state`` completed with the computed buffers of ``expected`` and cast to its dtypes.

    Raises:
        CheckpointError: a key is missing or unexpected, or a shape differs.
    """

    def computed(key: str) -> bool:
        return key in _COMPUTED or key.endswith("num_batches_tracked")

    missing = [k for k in expected if k not in state and not computed(k)]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {list(state[k].shape)} vs {list(expected[k].shape)}"
        for k in state
        if k in expected and state[k].shape != expected[k].shape
    ]
    problems = [
        f"{label}: {_preview(keys)}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", mismatched))
        if keys
    ]
    if problems:
        raise CheckpointError(f"{what} ({'; '.join(problems)}); {fix}")
    return {k: state[k].to(v.dtype) if k in state else v.clone() for k, v in expected.items()}


# ---------------------------------------------------------------------------- public API


def read_hf_checkpoint(path: str | Path) -> HFCheckpoint:
    """Read a Hugging Face D-FINE checkpoint into the dfine (official) layout.

    Args:
        path: a folder with ``config.json`` and ``model.safetensors``, or the ``.safetensors`` file.

    Raises:
        FileNotFoundError: nothing at ``path``.
        CheckpointError: not a D-FINE checkpoint, or unreadable; the message names the file and the fix.
    """
    path = Path(path)
    config_path, weights_path = _files(path)
    hf_config = _read_config(config_path)
    state = _official_names(_read_tensors(weights_path), weights_path)
    size = infer_model_size(state)
    if size is None:
        raise CheckpointError(f"{weights_path}: the weights match no D-FINE size ({', '.join(MODEL_PRESETS)})")
    num_classes = int(state[SCORE_HEAD_KEY].shape[0])
    cfg = _model_config(hf_config, size, num_classes, config_path)
    try:
        expected = _expected_state(cfg)
    except ValueError as err:
        raise CheckpointError(f"{config_path}: describes no buildable D-FINE ({err})") from None
    state = _fit(
        state,
        expected,
        f"{weights_path}: the weights do not fit D-FINE-{size.upper()} as {config_path} describes it",
        "the two files belong to different models; use the config.json saved with these weights",
    )
    return HFCheckpoint(cfg, state, _class_names(hf_config, num_classes, config_path), size, path)


def _config_of(model: DFINE, size: str) -> ModelConfig:
    """The preset of ``size`` with the model's class count, queries, input size and FDR scale."""
    decoder = model.decoder
    preset = MODEL_PRESETS[size].decoder
    reg_scale = decoder.reg_scale.item()
    eval_size = decoder.eval_spatial_size
    return model_config(
        size,
        num_classes=model.num_classes,
        eval_spatial_size=tuple(eval_size) if eval_size else None,
        decoder={
            "num_queries": decoder.num_queries,
            "num_denoising": decoder.num_denoising,
            "reg_scale": preset.reg_scale if _same(reg_scale, preset.reg_scale) else reg_scale,
        },
    )


def save_hf_checkpoint(
    model: DFINE, class_names: Sequence[str], folder: str | Path, *, config: ModelConfig | None = None
) -> Path:
    """Write ``model`` as a Hugging Face checkpoint that ``DFineForObjectDetection.from_pretrained`` loads.

    Args:
        model: a D-FINE model in train layout (not after ``deploy()``).
        class_names: one name per class, in class-id order (becomes ``id2label``).
        folder: created if needed; ``config.json`` and ``model.safetensors`` are (over)written.
        config: the model's config, when it is not a preset (the default is the preset of the
            size the weights have, with the model's class count, queries and input size).

    Returns:
        ``folder``.
    """
    state = model.state_dict()
    size = infer_model_size(state)
    if size is None:
        raise ValueError(
            "save_hf_checkpoint: the model matches no D-FINE size; pass a model built by DFINE.from_config"
        )
    cfg = config if config is not None else _config_of(model, size)
    names = [str(name) for name in class_names]
    if len(names) != cfg.num_classes:
        raise ValueError(f"save_hf_checkpoint: {len(names)} class_names for a model of {cfg.num_classes} classes")
    _fit(
        state,
        _expected_state(cfg),
        f"save_hf_checkpoint: the model's weights do not fit D-FINE-{size.upper()}",
        "pass the train-layout model (before deploy()), and config= when it is not built from a preset",
    )
    tensors = _hf_names(state)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config_text = json.dumps(_hf_config_dict(cfg, names), indent=2) + "\n"
    # written under temporary names, then renamed: an interrupted save leaves no truncated file
    partial = folder / f".{WEIGHTS_NAME}.partial"
    save_file(tensors, partial, metadata={"format": "pt"})  # as save_pretrained writes it
    os.replace(partial, folder / WEIGHTS_NAME)
    partial = folder / f".{CONFIG_NAME}.partial"
    partial.write_text(config_text, encoding="utf-8")
    os.replace(partial, folder / CONFIG_NAME)
    return folder

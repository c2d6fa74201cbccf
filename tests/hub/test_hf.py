"""Hugging Face ``DFineForObjectDetection`` checkpoints <-> dfine: equal outputs both ways, clear errors.

The Hugging Face configs of the official sizes are written out here (from the facts of the
transformers conversion script), independently of ``dfine.hub.hf``'s own table, so that a wrong
entry there shows up as a failed load or as different outputs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

pytest.importorskip("transformers", minversion="4.52")
from transformers import DFineConfig, DFineForObjectDetection  # noqa: E402

from dfine.config.presets import ModelConfig, model_config  # noqa: E402
from dfine.engine.checkpoint import CheckpointError  # noqa: E402
from dfine.hub.hf import (  # noqa: E402
    _model_config,
    _official_names,
    is_hf_checkpoint,
    read_hf_checkpoint,
    save_hf_checkpoint,
)
from dfine.model.dfine import DFINE  # noqa: E402

INPUT_SIZE = 320  # small for speed; both sides use anchors for this size
CLASS_NAMES = ("cat", "dog", "person", "car", "kite")
LOGITS_ATOL = 5e-3
BOXES_ATOL = 2e-4
SPREAD = 0.1  # random biases and norm parameters: nonzero everywhere, small enough to keep rounding tame

_BACKBONE_TABLE_FIELDS = (
    "stem_channels",
    "stage_in_channels",
    "stage_mid_channels",
    "stage_out_channels",
    "stage_num_blocks",
    "stage_numb_of_layers",
)


def _hgnet(*values: list[int], use_lab: bool, out_indices: list[int]) -> dict:
    """An hgnet_v2 backbone_config; stages 3 and 4 are light blocks with 5x5 kernels in every size."""
    config = dict(zip(_BACKBONE_TABLE_FIELDS, values))
    return {
        "model_type": "hgnet_v2",
        **config,
        "stage_downsample": [False, True, True, True],
        "stage_light_block": [False, False, True, True],
        "stage_kernel_size": [3, 3, 5, 5],
        "use_learnable_affine_block": use_lab,
        "embedding_size": config["stem_channels"][2],
        "hidden_sizes": config["stage_out_channels"],
        "depths": config["stage_num_blocks"],
        "out_indices": out_indices,
    }


_B0 = dict(
    stem_channels=[3, 16, 16],
    stage_in_channels=[16, 64, 256, 512],
    stage_mid_channels=[16, 32, 64, 128],
    stage_out_channels=[64, 256, 512, 1024],
    stage_num_blocks=[1, 1, 2, 1],
    stage_downsample=[False, True, True, True],
    stage_light_block=[False, False, True, True],
    stage_kernel_size=[3, 3, 5, 5],
    stage_numb_of_layers=[3, 3, 3, 3],
    use_learnable_affine_block=True,
    embedding_size=16,
    hidden_sizes=[64, 256, 512, 1024],
    depths=[1, 1, 2, 1],
)
HF_SIZES = {
    "n": dict(
        backbone_config={"model_type": "hgnet_v2", **_B0, "out_indices": [3, 4]},
        num_feature_levels=2,
        feat_strides=[16, 32],
        encoder_in_channels=[512, 1024],
        encoder_hidden_dim=128,
        encoder_ffn_dim=512,
        encode_proj_layers=[1],
        hidden_expansion=0.34,
        depth_mult=0.5,
        d_model=128,
        decoder_in_channels=[128, 128],
        decoder_ffn_dim=512,
        decoder_n_points=[6, 6],
        decoder_layers=3,
    ),
    "s": dict(
        backbone_config={"model_type": "hgnet_v2", **_B0, "out_indices": [2, 3, 4]},
        encoder_in_channels=[256, 512, 1024],
        hidden_expansion=0.5,
        depth_mult=0.34,
        decoder_n_points=[3, 6, 3],
        decoder_layers=3,
    ),
    "l": dict(
        backbone_config=_hgnet(
            [3, 32, 48],
            [48, 128, 512, 1024],
            [48, 96, 192, 384],
            [128, 512, 1024, 2048],
            [1, 1, 3, 1],
            [6, 6, 6, 6],
            use_lab=False,
            out_indices=[2, 3, 4],
        ),
        decoder_n_points=[3, 6, 3],
    ),
    "x": dict(
        backbone_config=_hgnet(
            [3, 32, 64],
            [64, 128, 512, 1024],
            [64, 128, 256, 512],
            [128, 512, 1024, 2048],
            [1, 2, 5, 2],
            [6, 6, 6, 6],
            use_lab=False,
            out_indices=[2, 3, 4],
        ),
        encoder_hidden_dim=384,
        encoder_ffn_dim=2048,
        decoder_in_channels=[384, 384, 384],
        decoder_n_points=[3, 6, 3],
        reg_scale=8.0,
    ),
}


@torch.no_grad()
def _liven(model: nn.Module, seed: int) -> nn.Module:
    """Random values in every weight and norm statistic: zero-initialised heads and identity norms hide
    naming bugs. Scaled so that activations neither vanish nor explode through the backbone."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.Embedding)):
            gain = 2 if isinstance(module, nn.Conv2d) else 1  # He for the ReLU convs; LayerNorms follow the rest
            module.weight.normal_(0, (gain / module.weight[0].numel()) ** 0.5, generator=gen)
            if getattr(module, "bias", None) is not None:
                module.bias.normal_(0, SPREAD, generator=gen)
        elif isinstance(module, nn.MultiheadAttention):  # its in-projection is not a Linear
            module.in_proj_weight.normal_(0, module.embed_dim**-0.5, generator=gen)
            module.in_proj_bias.normal_(0, SPREAD, generator=gen)
        elif isinstance(module, nn.LayerNorm) or hasattr(module, "running_var"):  # also frozen BatchNorms
            module.weight.normal_(1, SPREAD, generator=gen)
            module.bias.normal_(0, SPREAD, generator=gen)
            if hasattr(module, "running_var"):
                module.running_mean.normal_(0, SPREAD, generator=gen)
                module.running_var.uniform_(1 - SPREAD, 1 + SPREAD, generator=gen)
        elif hasattr(module, "scale") and isinstance(module.scale, nn.Parameter):  # learnable affine (LAB)
            module.scale.normal_(1, SPREAD, generator=gen)
            module.bias.normal_(0, SPREAD, generator=gen)
    return model.eval()


def _images(batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 3, INPUT_SIZE, INPUT_SIZE, generator=torch.Generator().manual_seed(7))


def _hf_model(size: str, tie: bool = False) -> DFineForObjectDetection:
    config = DFineConfig(
        **HF_SIZES[size],
        anchor_image_size=[INPUT_SIZE, INPUT_SIZE],
        id2label=dict(enumerate(CLASS_NAMES)),
        tie_word_embeddings=tie,
    )
    return _liven(DFineForObjectDetection(config), seed=1)


def _dfine_config(size: str) -> ModelConfig:
    return model_config(size, num_classes=len(CLASS_NAMES), eval_spatial_size=(INPUT_SIZE, INPUT_SIZE))


def _dfine_model(size: str) -> DFINE:
    return _liven(DFINE.from_config(_dfine_config(size)), seed=2)


@torch.no_grad()
def _max_differences(dfine_model: DFINE, hf_model: DFineForObjectDetection) -> tuple[float, float]:
    """Max |logits| and |boxes| differences over the images, rows paired by box (query order may differ)."""
    images = _images()
    ours = dfine_model(images)
    theirs = hf_model(pixel_values=images)
    logits, boxes = 0.0, 0.0
    for i in range(images.shape[0]):
        cost = torch.cdist(ours.boxes[i], theirs.pred_boxes[i], p=1)
        rows, cols = linear_sum_assignment(cost.numpy())
        logits = max(logits, (ours.logits[i][rows] - theirs.logits[i][cols]).abs().max().item())
        boxes = max(boxes, (ours.boxes[i][rows] - theirs.pred_boxes[i][cols]).abs().max().item())
    assert ours.logits.std() > 0.1 and ours.boxes.std() > 0.01, "degenerate outputs test nothing"
    return logits, boxes


@pytest.mark.parametrize("size", ["n", pytest.param("s", marks=pytest.mark.slow)])
def test_hf_checkpoint_reads_into_dfine_with_equal_outputs(tmp_path: Path, size: str) -> None:
    hf_model = _hf_model(size)
    hf_model.save_pretrained(tmp_path)
    assert is_hf_checkpoint(tmp_path) and is_hf_checkpoint(tmp_path / "model.safetensors")

    ckpt = read_hf_checkpoint(tmp_path)
    assert ckpt.size == size
    assert ckpt.class_names == CLASS_NAMES
    assert ckpt.config == _dfine_config(size)  # nothing in config.json was misread as a change
    model = DFINE.from_config(ckpt.config)
    model.load_state_dict(ckpt.state_dict, strict=True)

    logits, boxes = _max_differences(model.eval(), hf_model)
    assert logits < LOGITS_ATOL and boxes < BOXES_ATOL, f"logits {logits:.2e}, boxes {boxes:.2e}"


@pytest.mark.parametrize("size", ["l", "x"])
def test_every_official_name_of_the_large_sizes_has_its_hugging_face_name(size: str, fixtures_dir: Path) -> None:
    """L and X (frozen backbone norms; X's decoder input projections) without running them: the
    transformers model is built on the meta device and its names mapped to the official manifest."""
    official = json.loads((fixtures_dir / f"official_keys_{size}.json").read_text())
    with torch.device("meta"):
        hf_model = DFineForObjectDetection(DFineConfig(**HF_SIZES[size], num_labels=80, tie_word_embeddings=False))
    state = _official_names(hf_model.state_dict(), Path(f"{size}.safetensors"))
    dfine_computed = ("decoder.anchors", "decoder.valid_mask")  # not stored by transformers; counters are optional
    assert {k: list(v.shape) for k, v in state.items() if not k.endswith("num_batches_tracked")} == {
        k: shape for k, shape in official.items() if k not in dfine_computed and not k.endswith("num_batches_tracked")
    }
    assert _model_config(hf_model.config.to_dict(), size, 80, Path("config.json")) == model_config(size)


def test_tied_heads_are_read_from_their_one_stored_copy(tmp_path: Path) -> None:
    """With ``tie_word_embeddings`` (the DFineConfig default) save_pretrained writes each decoder head
    once (``model.decoder.*``), not twice."""
    hf_model = _hf_model("n", tie=True)
    hf_model.save_pretrained(tmp_path)
    state = read_hf_checkpoint(tmp_path / "model.safetensors").state_dict
    decoder = hf_model.model.decoder
    for i in range(3):
        assert torch.equal(state[f"decoder.dec_score_head.{i}.weight"], decoder.class_embed[i].weight)
        assert torch.equal(state[f"decoder.dec_bbox_head.{i}.layers.2.bias"], decoder.bbox_embed[i].layers[2].bias)


@pytest.mark.parametrize("size", ["n", pytest.param("s", marks=pytest.mark.slow)])
def test_dfine_saves_a_checkpoint_transformers_loads_with_equal_outputs(tmp_path: Path, size: str) -> None:
    model = _dfine_model(size)
    assert save_hf_checkpoint(model, CLASS_NAMES, tmp_path / "hf") == tmp_path / "hf"

    hf_model, info = DFineForObjectDetection.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not any(info.values()), info
    assert hf_model.config.id2label == dict(enumerate(CLASS_NAMES))

    logits, boxes = _max_differences(model, hf_model.eval())
    assert logits < LOGITS_ATOL and boxes < BOXES_ATOL, f"logits {logits:.2e}, boxes {boxes:.2e}"


@pytest.fixture(scope="module")
def saved_n(tmp_path_factory: pytest.TempPathFactory) -> tuple[DFINE, Path]:
    model = _dfine_model("n")
    return model, save_hf_checkpoint(model, CLASS_NAMES, tmp_path_factory.mktemp("hf_n"))


def test_dfine_state_dict_round_trips_exactly(saved_n: tuple[DFINE, Path]) -> None:
    model, folder = saved_n
    ckpt = read_hf_checkpoint(folder)
    own = model.state_dict()
    assert list(ckpt.state_dict) == list(own)
    for key, value in own.items():
        assert ckpt.state_dict[key].dtype == value.dtype, key
        assert torch.equal(ckpt.state_dict[key], value), key
    assert ckpt.class_names == CLASS_NAMES
    assert ckpt.config == _dfine_config("n")


def test_save_rejects_a_deployed_model_and_a_wrong_class_count(tmp_path: Path) -> None:
    model = _dfine_model("n")
    with pytest.raises(ValueError, match="3 class_names for a model of 5 classes"):
        save_hf_checkpoint(model, CLASS_NAMES[:3], tmp_path)
    with pytest.raises(CheckpointError, match=r"before deploy\(\)"):
        save_hf_checkpoint(model.deploy(), CLASS_NAMES, tmp_path)
    assert not (tmp_path / "model.safetensors").exists()


# ---------------------------------------------------------------------------- bad input


def _copy(folder: Path, to: Path, **config_changes) -> Path:
    shutil.copytree(folder, to)
    config = json.loads((to / "config.json").read_text())
    config.update(config_changes)
    (to / "config.json").write_text(json.dumps(config))
    return to


def test_another_architecture_in_the_safetensors_file(saved_n: tuple[DFINE, Path], tmp_path: Path) -> None:
    from safetensors.torch import save_file

    folder = _copy(saved_n[1], tmp_path / "other")
    save_file({"encoder.layer.0.attention.query.weight": torch.zeros(4, 4)}, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model\.safetensors: no D-FINE weights .*another model"):
        read_hf_checkpoint(folder)


def test_config_of_another_model_type(saved_n: tuple[DFINE, Path], tmp_path: Path) -> None:
    folder = _copy(saved_n[1], tmp_path / "detr", model_type="detr")
    with pytest.raises(CheckpointError, match=r"config\.json: model_type is 'detr', not 'd_fine'"):
        read_hf_checkpoint(folder)


def test_config_json_missing_beside_the_weights(saved_n: tuple[DFINE, Path], tmp_path: Path) -> None:
    weights = tmp_path / "model.safetensors"
    shutil.copy(saved_n[1] / "model.safetensors", weights)
    assert not is_hf_checkpoint(weights) and not is_hf_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: no config\.json beside it"):
        read_hf_checkpoint(weights)


def test_corrupt_safetensors(saved_n: tuple[DFINE, Path], tmp_path: Path) -> None:
    folder = _copy(saved_n[1], tmp_path / "corrupt")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a readable safetensors file"):
        read_hf_checkpoint(folder)
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a readable safetensors file"):
        read_hf_checkpoint(folder / "model.safetensors")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"id2label": {"0": "cat"}}, r"id2label has ids 0 but the weights have 5 classes"),
        ({"decoder_offset_scale": 0.7}, r"decoder_offset_scale is 0\.7; dfine supports only 0\.5"),
        ({"decoder_n_points": [4, 4]}, r"do not fit D-FINE-N .*shape"),
    ],
)
def test_config_that_does_not_describe_the_weights(
    saved_n: tuple[DFINE, Path], tmp_path: Path, changes: dict, message: str
) -> None:
    with pytest.raises(CheckpointError, match=message):
        read_hf_checkpoint(_copy(saved_n[1], tmp_path / "bad", **changes))


def test_backbone_other_than_the_official_one(saved_n: tuple[DFINE, Path], tmp_path: Path) -> None:
    backbone = json.loads((saved_n[1] / "config.json").read_text())["backbone_config"]
    folder = _copy(saved_n[1], tmp_path / "bad", backbone_config={**backbone, "stage_numb_of_layers": [6, 6, 6, 6]})
    with pytest.raises(CheckpointError, match=r"backbone_config\.stage_numb_of_layers is \[6, 6, 6, 6\]"):
        read_hf_checkpoint(folder)


def test_not_a_checkpoint_path(tmp_path: Path) -> None:
    (tmp_path / "weights.pth").write_bytes(b"x")
    assert not is_hf_checkpoint(tmp_path / "weights.pth")
    with pytest.raises(CheckpointError, match=r"weights\.pth: not a Hugging Face checkpoint"):
        read_hf_checkpoint(tmp_path / "weights.pth")
    with pytest.raises(FileNotFoundError):
        read_hf_checkpoint(tmp_path / "absent")

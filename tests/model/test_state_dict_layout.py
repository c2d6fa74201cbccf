"""Every size has exactly the official state_dict keys, order, shapes and parameter counts."""

from __future__ import annotations

import json

import pytest
import torch

import dfine

# (total params, trainable params) of the official train-layout model
OFFICIAL_PARAMS = {
    "n": (3_782_693, 3_782_691),
    "s": (10_321_877, 10_321_875),
    "m": (19_590_064, 19_590_062),
    "l": (31_244_152, 31_219_222),
    "x": (62_621_560, 62_596_118),
}


@pytest.mark.parametrize("size", ["n", "s", "m", "l", "x"])
def test_keys_shapes_and_counts(size, fixtures_dir):
    manifest = json.loads((fixtures_dir / f"official_keys_{size}.json").read_text())
    model = dfine.build_model(size)
    ours = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    assert ours == list(manifest.items())
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert (total, trainable) == OFFICIAL_PARAMS[size]
    # reg_scale is an int64 Parameter in the official checkpoints (X uses 8)
    assert model.state_dict()["decoder.reg_scale"].dtype == torch.int64
    assert model.decoder.reg_scale.item() == (8 if size == "x" else 4)


@pytest.mark.parametrize("size", ["l", "x"])
def test_large_sizes_freeze_stem_and_norms(size):
    model = dfine.build_model(size)
    assert not any(p.requires_grad for p in model.backbone.stem.parameters())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.backbone.modules())
    assert all(p.requires_grad for p in model.backbone.stages.parameters())


def test_state_dict_round_trip_strict(tmp_path):
    model = dfine.build_model("s")
    path = tmp_path / "s.pth"
    torch.save({"model": model.state_dict()}, path)
    other = dfine.build_model("s")
    report = dfine.load_checkpoint(other, path)
    assert report.source == "model" and not report.missing and not report.mismatched
    for key, value in model.state_dict().items():
        assert torch.equal(value, other.state_dict()[key]), key

"""build_model presets, overrides and their errors; train-mode outputs; deploy equivalence."""

from __future__ import annotations

import copy

import pytest
import torch

import dfine


def test_unknown_size_names_choices():
    with pytest.raises(ValueError, match="unknown model size 'q'.*n, s, m, l, x"):
        dfine.build_model("q")


def test_unknown_override_suggests_closest():
    with pytest.raises(ValueError, match="did you mean 'num_queries'"):
        dfine.build_model("n", num_querys=100)


def test_unknown_backbone_name():
    with pytest.raises(ValueError, match="unknown HGNetv2 name 'B9'"):
        dfine.build_model("n", backbone={"name": "B9"})


def test_mismatched_backbone_and_encoder_is_explained():
    with pytest.raises(ValueError, match="in_channels .* do not match HGNetv2 B2"):
        dfine.build_model("n", backbone={"name": "B2"})


def test_overrides_reach_every_section():
    model = dfine.build_model("n", num_classes=3, eval_spatial_size=(320, 320), num_queries=50)
    assert model.decoder.num_classes == 3
    assert model.decoder.anchors.shape == (1, 20 * 20 + 10 * 10, 4)
    assert model.encoder.eval_spatial_size == [320, 320]
    with torch.no_grad():
        out = model.eval()(torch.rand(1, 3, 320, 320))
    assert isinstance(out, dfine.DFINEOutputs)
    assert out.logits.shape == (1, 50, 3)
    assert out.boxes.shape == (1, 50, 4)
    assert out.aux == [] and out.pre is None and out.encoder == [] and out.denoising is None  # training only


def test_bad_image_shape_is_explained():
    model = dfine.build_model("n").eval()
    with pytest.raises(ValueError, match=r"images must be \[B, 3, H, W\]"):
        model(torch.rand(3, 64, 64))


def _targets():
    return [
        {"labels": torch.tensor([1, 4]), "boxes": torch.tensor([[0.3, 0.4, 0.2, 0.3], [0.7, 0.6, 0.2, 0.4]])},
        {"labels": torch.tensor([2]), "boxes": torch.tensor([[0.5, 0.5, 0.5, 0.5]])},
    ]


def test_train_outputs_carry_everything_the_criterion_needs():
    torch.manual_seed(0)
    model = dfine.build_model("n", num_classes=5).train()
    out = model(torch.rand(2, 3, 256, 256), targets=_targets())
    q = 300
    assert isinstance(out, dfine.DFINEOutputs)
    assert out.logits.shape == (2, q, 5)
    assert out.corners.shape == (2, q, 4 * 33)
    assert out.ref_points.shape == (2, q, 4)
    assert out.teacher_corners is None  # the final layer is the teacher
    assert len(out.aux) == 2  # N has 3 layers: 2 auxiliary + the final one
    assert out.aux[0].corners.shape == (2, q, 4 * 33)
    assert torch.equal(out.aux[0].teacher_corners, out.corners) and torch.equal(out.aux[0].teacher_logits, out.logits)
    assert out.encoder[0].logits.shape == (2, q, 5) and out.encoder[0].corners is None
    assert out.pre.boxes.shape == (2, q, 4)
    assert not out.class_agnostic_encoder
    group = out.denoising.group
    num_dn = group.num_split[0]
    assert group.num_split == [num_dn, q]
    assert len(out.denoising.layers) == 3
    assert out.denoising.layers[0].boxes.shape == (2, num_dn, 4)
    assert torch.equal(out.denoising.layers[0].teacher_corners, out.denoising.layers[-1].corners)
    assert out.denoising.pre.boxes.shape == (2, num_dn, 4)
    assert group.num_group == 100 // 2


def test_denoising_off_at_runtime_keeps_state_dict():
    model = dfine.build_model("n").train()
    keys = list(model.state_dict())
    model.decoder.num_denoising = 0
    out = model(torch.rand(1, 3, 256, 256), targets=_targets()[:1])
    assert out.denoising is None
    assert list(model.state_dict()) == keys


def test_too_small_input_is_explained():
    model = dfine.build_model("n").eval()
    with pytest.raises(ValueError, match="fewer than num_queries=300"):
        model(torch.rand(1, 3, 128, 128))


def test_training_with_denoising_needs_targets():
    model = dfine.build_model("n").train()
    with pytest.raises(ValueError, match="needs targets"):
        model(torch.rand(1, 3, 128, 128))


@pytest.mark.parametrize("size", ["s", "l"])
def test_deploy_equals_eval(size):
    """Deploy changes the encoder (fused convs) and the decoder (dropped heads); check each part on
    identical inputs so that near-tied top-k choices of a random model cannot flip."""
    torch.manual_seed(0)
    model = dfine.build_model(size).eval()
    with torch.no_grad():  # give zero-initialized heads and BN statistics non-trivial values
        for p in model.parameters():
            if p.dtype.is_floating_point and p.requires_grad:
                p.add_(0.02 * torch.randn_like(p))
        for name, buf in model.named_buffers():
            if name.endswith("running_var"):
                buf.mul_(torch.exp(0.2 * torch.randn_like(buf)))
    images = torch.rand(1, 3, 256, 256)
    deployed = copy.deepcopy(model).deploy()
    with torch.no_grad():
        feats = model.backbone(images)
        torch.testing.assert_close(deployed.backbone(images), feats, atol=1e-4, rtol=1e-4)
        encoded = model.encoder(feats)
        torch.testing.assert_close(deployed.encoder(feats), encoded, atol=1e-4, rtol=1e-4)
        expected = model.decoder(encoded)
        got = deployed.decoder(encoded)
    torch.testing.assert_close(got.logits, expected.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.boxes, expected.boxes, atol=1e-5, rtol=1e-5)
    assert deployed.deploy() is deployed  # idempotent

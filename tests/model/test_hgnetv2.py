"""HGNetv2 architectures and local pretrained-weight loading."""

from __future__ import annotations

import pytest
import torch

from dfine.model.hgnetv2 import HGNETV2_ARCHS, HGNetv2, load_hgnetv2_pretrained


@pytest.mark.parametrize("name", sorted(HGNETV2_ARCHS))
def test_every_arch_builds_and_strides(name):
    net = HGNetv2(name, use_lab=name in {"B0", "B1", "B2"}, return_idx=(0, 1, 2, 3), freeze_at=-1, freeze_norm=False)
    feats = net.eval()(torch.rand(1, 3, 64, 64))
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 2]
    assert [f.shape[1] for f in feats] == net.out_channels


def test_pretrained_from_local_dir(tmp_path):
    source = HGNetv2("B0", use_lab=True, freeze_at=-1, freeze_norm=False)
    torch.save(source.state_dict(), tmp_path / "PPHGNetV2_B0_stage1.pth")
    target = HGNetv2("B0", use_lab=True, freeze_at=-1, freeze_norm=False)
    load_hgnetv2_pretrained(target, tmp_path)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value)


def test_pretrained_into_frozen_norm_backbone(tmp_path):
    source = HGNetv2("B4", freeze_norm=False)
    path = tmp_path / "b4.pth"
    torch.save(source.state_dict(), path)
    target = HGNetv2("B4")  # FrozenBatchNorm2d has no num_batches_tracked
    load_hgnetv2_pretrained(target, path)
    assert torch.equal(target.stem.stem1.bn.running_var, source.stem.stem1.bn.running_var)


def test_missing_pretrained_file_says_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"PPHGNetV2_B0_stage1.pth.*pretrained: False"):
        load_hgnetv2_pretrained(HGNetv2("B0"), tmp_path)


def test_pretrained_of_other_arch_is_refused(tmp_path):
    torch.save(HGNetv2("B0").state_dict(), tmp_path / "PPHGNetV2_B2_stage1.pth")
    with pytest.raises(ValueError, match="another size"):
        load_hgnetv2_pretrained(HGNetv2("B2"), tmp_path)


def _reference_conv_bn_act(module, x):
    """The layer as the official modules compute it: BN(conv) -> ReLU -> scale * x + bias."""
    return module.lab.scale * torch.relu(module.bn(module.conv(x))) + module.lab.bias


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_training_relu_affine_matches_the_modules(memory_format):
    """The fused ReLU + LAB autograd op used in training: same outputs and same gradients."""
    from dfine.model.hgnetv2 import ConvBNAct

    torch.manual_seed(0)
    layer = ConvBNAct(6, 10, 3, use_lab=True).double().train().to(memory_format=memory_format)
    with torch.no_grad():
        layer.lab.scale.fill_(-0.7)  # a negative scale too: no sign assumption
        layer.lab.bias.fill_(0.3)
    x = torch.randn(2, 6, 9, 11, dtype=torch.double).contiguous(memory_format=memory_format).requires_grad_()
    upstream = torch.randn(2, 10, 9, 11, dtype=torch.double)

    fused = layer(x)
    fused.backward(upstream)
    fused_grads = [x.grad.clone()] + [p.grad.clone() for p in layer.parameters()]
    x.grad = None
    layer.zero_grad()
    reference = _reference_conv_bn_act(layer, x)
    reference.backward(upstream)
    reference_grads = [x.grad] + [p.grad for p in layer.parameters()]

    assert fused.grad_fn is not None and "ReluAffine" in type(fused.grad_fn).__name__
    torch.testing.assert_close(fused, reference, rtol=0, atol=0)
    for got, want in zip(fused_grads, reference_grads):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.autograd.gradcheck(
        lambda inp, s, b: type(fused.grad_fn)._forward_cls.apply(inp, s, b),
        (torch.randn(1, 2, 3, 3, dtype=torch.double, requires_grad=True), layer.lab.scale, layer.lab.bias),
    )


def test_training_relu_affine_is_skipped_where_it_cannot_apply():
    """Mixed precision (bf16 activations, fp32 LAB) keeps the plain modules and their type promotion."""
    from dfine.model.hgnetv2 import ConvBNAct

    layer = ConvBNAct(3, 4, 1, use_lab=True).train()
    x = torch.randn(1, 3, 4, 4, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    assert "ReluAffine" not in type(out.grad_fn).__name__
    out.float().sum().backward()
    assert layer.lab.scale.grad is not None

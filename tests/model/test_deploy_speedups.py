"""The inference speedups: exact ones (no-grad paths) equal the reference bitwise, the opt-in ones
(``deploy(fold_backbone_bn=True, channels_last=True)``) and the gather-based deformable attention
equal it up to fp32 rounding, and none of them changes a state_dict."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

import dfine
from dfine.model.deformable_attention import (
    MSDeformableAttention,
    deformable_attention_core,
    deformable_attention_gather,
)
from dfine.model.hgnetv2 import ConvBNAct, StemBlock, _max_pool_2x2_stride1
from dfine.model.layers import apply_activation, eager_inference


def _randomize_norms(module: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and LAB values, so that folding has something to fold."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=gen))
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(torch.exp(0.3 * torch.randn(m.running_var.shape, generator=gen)))
    return module


def _perturbed_model(size: str) -> nn.Module:
    torch.manual_seed(0)
    model = dfine.build_model(size).eval()
    with torch.no_grad():  # zero-initialized heads and default BN statistics would hide differences
        for p in model.parameters():
            if p.dtype.is_floating_point and p.requires_grad:
                p.add_(0.02 * torch.randn_like(p))
    return _randomize_norms(model)


@pytest.mark.parametrize("channels_last", [False, True])
def test_max_pool_slices_equal_max_pool(channels_last):
    x = torch.randn(2, 5, 9, 7).round(decimals=1)  # rounding makes ties
    x[0, 0, 3, 3] = float("nan")
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    expected = nn.MaxPool2d(2, 1, ceil_mode=True)(x)
    torch.testing.assert_close(_max_pool_2x2_stride1(x), expected, rtol=0, atol=0, equal_nan=True)


def test_stem_without_grad_is_bitwise_equal():
    stem = _randomize_norms(StemBlock(3, 16, 16, use_lab=True)).eval()
    x = torch.rand(1, 3, 64, 64)
    expected = stem(x)
    with torch.no_grad():
        assert torch.equal(stem(x), expected)


@pytest.mark.parametrize("act", [nn.ReLU(), nn.SiLU(), nn.GELU(), nn.Identity()])
def test_apply_activation_without_grad_is_bitwise_equal(act):
    x = torch.randn(2, 3, 5, 5)
    expected = act(x)
    with torch.no_grad():
        assert torch.equal(apply_activation(act, x.clone()), expected)


@pytest.mark.parametrize("use_lab", [False, True])
def test_conv_bn_act_without_grad_is_bitwise_equal(use_lab):
    block = _randomize_norms(ConvBNAct(4, 6, 3, use_lab=use_lab)).eval()
    x = torch.randn(2, 4, 8, 8)
    expected = block(x)
    with torch.inference_mode():
        assert torch.equal(block(x), expected)


@pytest.mark.parametrize("lab_scale", [0.7, -0.7])
@pytest.mark.parametrize("frozen", [False, True])
@pytest.mark.parametrize("kernel,groups,use_act", [(3, 1, True), (3, 4, False), (1, 1, True)])
def test_fold_batch_norm_equals_unfolded(lab_scale, frozen, kernel, groups, use_act):
    block = ConvBNAct(4, 8 if groups == 1 else 4, kernel, groups=groups, use_act=use_act, use_lab=True)
    if frozen:  # L and X freeze their backbone norms
        block.bn = FrozenBatchNorm2d(block.bn.num_features)
    block = _randomize_norms(block).eval()
    if use_act:
        with torch.no_grad():
            block.lab.scale.fill_(lab_scale)
            block.lab.bias.fill_(0.3)
    x = torch.randn(2, 4, 9, 9)
    expected = block(x)
    keys = {k: v.shape for k, v in block.state_dict().items()}
    block.fold_batch_norm()
    assert {k: v.shape for k, v in block.state_dict().items()} == keys  # the cache is not persistent
    torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


def test_folded_block_refolds_after_load_state_dict():
    block = _randomize_norms(ConvBNAct(4, 6, 3, use_lab=True)).eval()
    other = _randomize_norms(ConvBNAct(4, 6, 3, use_lab=True), seed=1).eval()
    x = torch.randn(1, 4, 8, 8)
    expected = other(x)
    block.fold_batch_norm()
    block.load_state_dict(other.state_dict())
    torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


def test_conv_bn_act_trains_with_autograd():
    block = ConvBNAct(3, 4, 3, use_lab=True).train()
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    block(x).square().sum().backward()
    assert x.grad is not None and block.lab.scale.grad is not None


def _attention_inputs(dtype: torch.dtype, batch: int = 2):
    gen = torch.Generator().manual_seed(0)
    shapes = [(7, 5), (4, 3), (2, 2)]
    points = [2, 3, 1]
    heads, head_dim, queries = 2, 3, 6
    value = [torch.randn(batch * heads, head_dim, h, w, generator=gen, dtype=dtype) for h, w in shapes]
    # locations beyond [0, 1] exercise the zero padding of the outer taps
    locations = torch.rand(batch, queries, heads, sum(points), 2, generator=gen, dtype=dtype) * 1.4 - 0.2
    weights = torch.softmax(torch.randn(batch, queries, heads, sum(points), generator=gen, dtype=dtype), -1)
    return value, shapes, locations, weights, points


@pytest.mark.parametrize("batch", [1, 2])
def test_gather_attention_equals_grid_sample_core(batch):
    value, shapes, locations, weights, points = _attention_inputs(torch.float64, batch)
    expected = deformable_attention_core(value, shapes, locations, weights, points)
    got = deformable_attention_gather(value, shapes, locations, weights, points)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_gather_attention_reads_batch_one_memory_views():
    """Batch 1 as the decoder passes it: per-level values that are strided views of the memory."""
    shapes, points, heads, head_dim = [(6, 4), (3, 2)], [2, 2], 2, 4
    memory = torch.randn(1, sum(h * w for h, w in shapes), heads * head_dim)
    per_head = memory.reshape(1, -1, heads, head_dim).permute(0, 2, 3, 1)
    value = [
        v.reshape(heads, head_dim, h, w)
        for v, (h, w) in zip(per_head.split([h * w for h, w in shapes], dim=-1), shapes)
    ]
    locations = torch.rand(1, 5, heads, sum(points), 2)
    weights = torch.softmax(torch.randn(1, 5, heads, sum(points)), -1)
    expected = deformable_attention_core([v.contiguous() for v in value], shapes, locations, weights, points)
    got = deformable_attention_gather(value, shapes, locations, weights, points)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_module_without_grad_equals_module_with_grad():
    attn = MSDeformableAttention(embed_dim=8, num_heads=2, num_levels=2, num_points=[3, 2])
    with torch.no_grad():
        attn.sampling_offsets.weight.normal_(0, 0.5)
        attn.attention_weights.weight.normal_(0, 0.5)
    value = [torch.randn(2 * 2, 4, 8, 8), torch.randn(2 * 2, 4, 4, 4)]
    query, ref = torch.randn(2, 7, 8), torch.rand(2, 7, 1, 4)
    expected = attn(query, ref, value, [(8, 8), (4, 4)])
    with torch.no_grad():
        got = attn(query, ref, value, [(8, 8), (4, 4)])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_fast_deploy_keeps_the_deploy_state_dict():
    model = dfine.build_model("n")
    plain = copy.deepcopy(model).deploy().state_dict()
    fast = copy.deepcopy(model).deploy(fold_backbone_bn=True, channels_last=True).state_dict()
    assert list(fast) == list(plain)
    assert all(fast[k].shape == plain[k].shape for k in plain)


@pytest.mark.parametrize("size", ["n", "l"])
def test_fast_deploy_equals_eval(size):
    """Each part on identical inputs, so that near-tied top-k choices of a random model cannot flip."""
    model = _perturbed_model(size)
    images = torch.rand(1, 3, 320, 320)
    fast = copy.deepcopy(model).deploy(fold_backbone_bn=True, channels_last=True)
    assert fast.deploy(fold_backbone_bn=True, channels_last=True) is fast  # idempotent
    with torch.no_grad():
        feats = model.backbone(images)
        for got, ref in zip(fast.backbone(images), feats):
            torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
        encoded = model.encoder(feats)
        for got, ref in zip(fast.encoder(feats), encoded):
            torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
        expected = model.decoder(encoded)
        got = fast.decoder(encoded)
    torch.testing.assert_close(got.logits, expected.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.boxes, expected.boxes, atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:FutureWarning")
def test_eager_inference_gate():
    """The eager-only paths run without autograd, but never under a tracer (exporters see the reference ops)."""
    assert not eager_inference()
    with torch.no_grad():
        assert eager_inference()
        seen = []

        def record(x):
            seen.append(eager_inference())
            return x + 1

        torch.jit.trace(record, torch.zeros(1), check_trace=False)
    assert seen == [False]

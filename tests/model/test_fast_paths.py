"""The fast paths of ``dfine.model.fast_paths``: swapped in only when asked, equal to the reference
modules (bitwise where the arithmetic is the same, to fp32 rounding where it is not), and never a
change to a state_dict."""

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
from dfine.model.fast_paths import (
    GatherDeformableAttention,
    InferenceConvBNAct,
    ReluAffine,
    SliceMaxPool2d,
    TrainingConvBNAct,
    use_inference_paths,
    use_training_paths,
)
from dfine.model.hgnetv2 import ConvBNAct, StemBlock
from dfine.model.layers import activation_in_place


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


def _swapped(block: nn.Module) -> nn.Module:
    holder = nn.Sequential(block)
    use_inference_paths(holder)
    return holder[0]


# ---- inference paths ---------------------------------------------------------------------------


def test_the_reference_model_runs_no_fast_path_until_deployed():
    model = dfine.build_model("n").eval()
    kinds = {type(m) for m in model.modules()}
    assert not kinds & {InferenceConvBNAct, TrainingConvBNAct, SliceMaxPool2d, GatherDeformableAttention}
    model.deploy()
    kinds = {type(m) for m in model.modules()}
    assert {InferenceConvBNAct, SliceMaxPool2d} <= kinds and GatherDeformableAttention not in kinds
    assert ConvBNAct not in kinds
    model.deploy(gather_sampling=True)
    assert MSDeformableAttention not in {type(m) for m in model.modules()}


@pytest.mark.parametrize("channels_last", [False, True])
def test_slice_max_pool_equals_max_pool(channels_last):
    x = torch.randn(2, 5, 9, 7).round(decimals=1)  # rounding makes ties
    x[0, 0, 3, 3] = float("nan")
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    expected = nn.MaxPool2d(2, 1, ceil_mode=True)(x)
    torch.testing.assert_close(SliceMaxPool2d()(x), expected, rtol=0, atol=0, equal_nan=True)


def test_deployed_stem_is_bitwise_equal():
    stem = _randomize_norms(StemBlock(3, 16, 16, use_lab=True)).eval()
    x = torch.rand(1, 3, 64, 64)
    expected = stem(x)
    fast = copy.deepcopy(stem)
    use_inference_paths(fast)
    assert isinstance(fast.pool, SliceMaxPool2d) and isinstance(fast.stem1, InferenceConvBNAct)
    with torch.no_grad():
        assert torch.equal(fast(x), expected)


@pytest.mark.parametrize("act", [nn.ReLU(), nn.SiLU(), nn.GELU(), nn.Identity()])
def test_activation_in_place_is_bitwise_equal(act):
    x = torch.randn(2, 3, 5, 5)
    expected = act(x)
    with torch.no_grad():
        assert torch.equal(activation_in_place(act, x.clone()), expected)


@pytest.mark.parametrize("use_lab", [False, True])
def test_inference_conv_bn_act_is_bitwise_equal(use_lab):
    block = _randomize_norms(ConvBNAct(4, 6, 3, use_lab=use_lab)).eval()
    x = torch.randn(2, 4, 8, 8)
    expected = block(x)
    fast = _swapped(copy.deepcopy(block))
    assert type(fast) is InferenceConvBNAct
    with torch.inference_mode():
        assert torch.equal(fast(x), expected)


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
    fast = _swapped(copy.deepcopy(block))
    fast.fold_batch_norm()
    assert {k: v.shape for k, v in fast.state_dict().items()} == keys  # the cache is not persistent
    assert fast.lab_scale_folded == (use_act and lab_scale > 0)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), expected, rtol=1e-5, atol=1e-5)


def test_folded_block_refolds_after_load_state_dict():
    block = _swapped(_randomize_norms(ConvBNAct(4, 6, 3, use_lab=True)).eval())
    other = _randomize_norms(ConvBNAct(4, 6, 3, use_lab=True), seed=1).eval()
    x = torch.randn(1, 4, 8, 8)
    expected = other(x)
    block.fold_batch_norm()
    block.load_state_dict(other.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


def test_swapped_block_shares_the_parameters_and_leaves_the_original_alone():
    block = ConvBNAct(3, 4, 3, use_lab=True)
    fast = _swapped(block)
    assert fast.conv.weight is block.conv.weight and fast.lab.scale is block.lab.scale
    fast.fold_batch_norm()
    assert "folded_weight" not in block._buffers  # the original's registries were copied, not shared


def test_gather_attention_module_equals_grid_sample_module():
    attn = MSDeformableAttention(embed_dim=8, num_heads=2, num_levels=2, num_points=[3, 2])
    with torch.no_grad():
        attn.sampling_offsets.weight.normal_(0, 0.5)
        attn.attention_weights.weight.normal_(0, 0.5)
    value = [torch.randn(2 * 2, 4, 8, 8), torch.randn(2 * 2, 4, 4, 4)]
    query, ref = torch.randn(2, 7, 8), torch.rand(2, 7, 1, 4)
    expected = attn(query, ref, value, [(8, 8), (4, 4)])
    fast = GatherDeformableAttention.from_reference(copy.deepcopy(attn))
    with torch.no_grad():
        got = fast(query, ref, value, [(8, 8), (4, 4)])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_gather_attention_refuses_discrete_sampling():
    attn = MSDeformableAttention(embed_dim=8, num_heads=2, num_levels=1, num_points=[2], method="discrete")
    with pytest.raises(ValueError, match="bilinear"):
        GatherDeformableAttention.from_reference(attn)


def test_fast_deploy_keeps_the_deploy_state_dict():
    model = dfine.build_model("n")
    plain = copy.deepcopy(model).deploy().state_dict()
    fast = copy.deepcopy(model).deploy(fold_backbone_bn=True, channels_last=True, gather_sampling=True).state_dict()
    assert list(fast) == list(plain)
    assert all(fast[k].shape == plain[k].shape for k in plain)


@pytest.mark.parametrize("size", ["n", "l"])
def test_fast_deploy_equals_eval(size):
    """Each part on identical inputs, so that near-tied top-k choices of a random model cannot flip."""
    model = _perturbed_model(size)
    images = torch.rand(1, 3, 320, 320)
    flags = {"fold_backbone_bn": True, "channels_last": True, "gather_sampling": True}
    fast = copy.deepcopy(model).deploy(**flags)
    assert fast.deploy(**flags) is fast  # idempotent
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


# ---- training paths ----------------------------------------------------------------------------


def _reference_conv_bn_act(module, x):
    """The layer as the official modules compute it: BN(conv) -> ReLU -> scale * x + bias."""
    return module.lab.scale * torch.relu(module.bn(module.conv(x))) + module.lab.bias


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_training_relu_affine_matches_the_modules(memory_format):
    """The fused ReLU + LAB autograd op: same outputs and same gradients as the reference modules."""
    torch.manual_seed(0)
    holder = nn.Sequential(ConvBNAct(6, 10, 3, use_lab=True))
    assert use_training_paths(holder) == 1
    layer = holder[0].double().train().to(memory_format=memory_format)
    assert type(layer) is TrainingConvBNAct
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

    assert "ReluAffine" in type(fused.grad_fn).__name__
    torch.testing.assert_close(fused, reference, rtol=0, atol=0)
    for got, want in zip(fused_grads, reference_grads):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.autograd.gradcheck(
        ReluAffine.apply,
        (torch.randn(1, 2, 3, 3, dtype=torch.double, requires_grad=True), layer.lab.scale, layer.lab.bias),
    )


def test_training_relu_affine_is_skipped_under_autocast():
    """Mixed precision (bf16 activations, fp32 LAB) keeps the plain modules and their type promotion."""
    holder = nn.Sequential(ConvBNAct(3, 4, 1, use_lab=True))
    use_training_paths(holder)
    layer = holder[0].train()
    x = torch.randn(1, 3, 4, 4, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    assert "ReluAffine" not in type(out.grad_fn).__name__
    out.float().sum().backward()
    assert layer.lab.scale.grad is not None


def test_training_paths_only_touch_blocks_with_an_affine():
    model = dfine.build_model("n")
    swapped = use_training_paths(model)
    blocks = [m for m in model.modules() if isinstance(m, ConvBNAct)]
    assert swapped == sum(type(m) is TrainingConvBNAct for m in blocks) > 0
    assert all(type(m) is ConvBNAct for m in blocks if not isinstance(m, TrainingConvBNAct))
    plain = dfine.build_model("n").state_dict()
    assert list(model.state_dict()) == list(plain)

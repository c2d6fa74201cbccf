"""Fast paths that stand in for reference modules, swapped in explicitly.

The reference modules (``hgnetv2``, ``hybrid_encoder``, ``deformable_attention``) read like the paper and
run everywhere: training, evaluation, export, any device. Each class here subclasses one of them, takes
over its parameters and buffers under the same names (so state_dicts and checkpoints do not change)
and changes only how the forward is computed. Nothing switches on global autograd or tracing state:
a model runs a fast path only after one of the two functions below put it there.

* :func:`use_inference_paths` (from ``DFINE.deploy``): backbone conv blocks with in-place activations
  and optionally BatchNorm folded into the conv, the stem's max-pool as two maxima of shifted views,
  and optionally the gather-based deformable sampling (fastest on the CPU; exporters need
  ``grid_sample``, so ``deploy()`` leaves it off unless asked).
* :func:`use_training_paths` (from the trainer): backbone conv blocks whose ReLU + learnable affine is
  one autograd node.

Equality with the reference is tested in ``tests/model/test_fast_paths.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .deformable_attention import MSDeformableAttention, deformable_attention_gather
from .hgnetv2 import ConvBNAct, LearnableAffineBlock, StemBlock
from .layers import fuse_conv_bn

__all__ = [
    "GatherDeformableAttention",
    "InferenceConvBNAct",
    "SliceMaxPool2d",
    "TrainingConvBNAct",
    "use_inference_paths",
    "use_training_paths",
]


def _take_over(cls: type[nn.Module], module: nn.Module) -> nn.Module:
    """A ``cls`` instance holding ``module``'s parameters, buffers, submodules and settings.

    The tensors are shared, the registries copied, so the two modules do not see each other's later
    registrations; the caller replaces ``module`` by the result in its parent.
    """
    new = cls.__new__(cls)
    new.__dict__.update({k: (v.copy() if isinstance(v, (dict, set)) else v) for k, v in module.__dict__.items()})
    return new


def _replace(root: nn.Module, should_replace, make) -> int:
    """Replace every submodule of ``root`` for which ``should_replace`` holds by ``make(it)``; the count."""
    count = 0
    for parent in list(root.modules()):
        for name, child in list(parent.named_children()):
            if should_replace(child):
                setattr(parent, name, make(child))
                count += 1
    return count


class ReluAffine(torch.autograd.Function):
    """``scale * relu(x) + bias`` (ReLU then LAB) for training, with a hand-written backward.

    Same values as the two modules (the product and the sum are rounded as ``scale * r + bias``);
    it keeps one full-size buffer (the ReLU output) for backward and allocates fewer per layer, which
    matters on the large early maps of the backbone.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        relu = x.clamp_min(0)
        ctx.save_for_backward(relu, scale)
        return relu.mul(scale).add_(bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        relu, scale = ctx.saved_tensors
        grad_x = grad_scale = grad_bias = None
        if ctx.needs_input_grad[0]:
            # ReLU's own backward rule (zero where the output is 0), then the LAB scale
            grad_x = torch.ops.aten.threshold_backward(grad, relu, 0).mul_(scale)
        if ctx.needs_input_grad[1]:
            # the product's cascade sum, as autograd reduces it: the terms cancel to ~1 % of their size,
            # so a BLAS dot (other summation order) lands measurably elsewhere
            grad_scale = (grad * relu).sum().reshape(1)
        if ctx.needs_input_grad[2]:
            grad_bias = grad.sum().reshape(1)
        return grad_x, grad_scale, grad_bias


class TrainingConvBNAct(ConvBNAct):
    """:class:`ConvBNAct` whose ReLU + LAB runs as one :class:`ReluAffine` node (fp32 training).

    Under autocast (bf16 / fp16 activations, fp32 LAB) the reference modules run, with their promotion.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        if isinstance(self.lab, LearnableAffineBlock) and x.dtype == self.lab.scale.dtype:
            return ReluAffine.apply(x, self.lab.scale, self.lab.bias)
        return self.lab(self.act(x))


class InferenceConvBNAct(ConvBNAct):
    """:class:`ConvBNAct` for inference: activation and affine in place, BatchNorm optionally folded.

    Without folding the values are bitwise the reference's. :meth:`fold_batch_norm` folds the BN, and a
    positive LAB scale, into a cached conv weight (about 1e-5 relative change in fp32 rounding). The cache
    is not in the state_dict, so the layout stays the official deploy one (which keeps ``conv`` and
    ``bn``); loading a state_dict re-folds it. In-place updates need a fresh conv output that autograd
    does not keep, so this block is for inference only.
    """

    folded_weight: torch.Tensor | None
    folded_bias: torch.Tensor | None

    @classmethod
    def from_reference(cls, block: ConvBNAct) -> InferenceConvBNAct:
        new = _take_over(cls, block)
        if "folded_weight" not in new._buffers:
            new.register_buffer("folded_weight", None, persistent=False)
            new.register_buffer("folded_bias", None, persistent=False)
            new.lab_scale_folded = False
            new.register_load_state_dict_post_hook(_refold_batch_norm)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.folded_weight is None:
            x = self.bn(self.conv(x))
        else:
            conv = self.conv
            x = F.conv2d(x, self.folded_weight, self.folded_bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        if isinstance(self.act, nn.ReLU):
            x = x.relu_()
        if isinstance(self.lab, LearnableAffineBlock):
            if not self.lab_scale_folded:
                x = x.mul_(self.lab.scale)
            x = x.add_(self.lab.bias)
        return x

    @torch.no_grad()
    def fold_batch_norm(self) -> None:
        """Fold BN (and a positive LAB scale) into one conv weight; parameters stay as they are."""
        weight, bias = fuse_conv_bn(self.conv, self.bn)
        self.lab_scale_folded = False
        if isinstance(self.lab, LearnableAffineBlock) and self.lab.scale.item() > 0:
            # relu(s * y) == s * relu(y) for s > 0, so s can scale the conv instead
            scale = self.lab.scale.detach()
            weight, bias = weight * scale, bias * scale
            self.lab_scale_folded = True
        self.folded_weight = weight  # keeps conv.weight's memory format (channels-last after deploy)
        self.folded_bias = bias


def _refold_batch_norm(module: InferenceConvBNAct, incompatible_keys: object) -> None:
    """``load_state_dict`` post-hook: a folded block re-folds the freshly loaded conv and BN."""
    if module.folded_weight is not None:
        module.fold_batch_norm()


class SliceMaxPool2d(nn.Module):
    """``MaxPool2d(2, stride=1, ceil_mode=True)`` as two element-wise maxima of shifted views.

    Equal values, ties and NaNs included (max is exact), at a fraction of the cost: the CPU max-pool
    kernel computes the indices even without autograd (~14 ms on N's 16x321x321 stem map, this ~0.4 ms).
    Its gradient would break ties differently, so training keeps ``MaxPool2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = torch.maximum(x[..., :-1, :], x[..., 1:, :])
        return torch.maximum(rows[..., :-1], rows[..., 1:])


class GatherDeformableAttention(MSDeformableAttention):
    """:class:`MSDeformableAttention` sampling with :func:`deformable_attention_gather` (bilinear only).

    Equal to ``grid_sample`` up to fp32 rounding and faster on the CPU; ONNX has no op for its
    ``embedding_bag``, so exported graphs keep the reference.
    """

    @classmethod
    def from_reference(cls, attention: MSDeformableAttention) -> GatherDeformableAttention:
        if attention.method != "default":
            raise ValueError(f"gather sampling is bilinear; this attention samples {attention.method!r}")
        return _take_over(cls, attention)

    def sample(
        self,
        value: list[torch.Tensor],
        spatial_shapes: list[tuple[int, int]],
        locations: torch.Tensor,
        weights: torch.Tensor,
    ) -> torch.Tensor:
        return deformable_attention_gather(value, spatial_shapes, locations, weights, self.num_points_list)


def use_inference_paths(model: nn.Module, *, fold_batch_norm: bool = False, gather_sampling: bool = False) -> None:
    """Swap ``model``'s blocks for their inference paths, in place (idempotent).

    Args:
        model: a D-FINE model (or part of one) in eval mode.
        fold_batch_norm: also fold each backbone BatchNorm into its conv (changes fp32 rounding).
        gather_sampling: bilinear deformable attention by gather instead of ``grid_sample`` (CPU speed;
            not exportable to ONNX).
    """
    _replace(
        model,
        lambda m: isinstance(m, ConvBNAct) and not isinstance(m, InferenceConvBNAct),
        InferenceConvBNAct.from_reference,
    )
    for module in model.modules():
        if isinstance(module, StemBlock) and isinstance(module.pool, nn.MaxPool2d):
            module.pool = SliceMaxPool2d()
        if fold_batch_norm and isinstance(module, InferenceConvBNAct):
            module.fold_batch_norm()
    if gather_sampling:
        _replace(
            model,
            lambda m: type(m) is MSDeformableAttention and m.method == "default",
            GatherDeformableAttention.from_reference,
        )


def use_training_paths(model: nn.Module) -> int:
    """Swap ``model``'s backbone conv blocks with a learnable affine for :class:`TrainingConvBNAct`.

    Returns the number of blocks swapped. Values are bitwise the reference's; gradients equal them
    (tested in float64).
    """
    return _replace(
        model,
        lambda m: type(m) is ConvBNAct and isinstance(m.lab, LearnableAffineBlock),
        lambda m: _take_over(TrainingConvBNAct, m),
    )

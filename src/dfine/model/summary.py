"""Model size and cost: parameter counts and FLOPs, in the convention of the paper's tables.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on the deployed model (BN folded,
RepVGG branches merged, unused decoder heads dropped), batch 1: one multiply-add counts as 2 FLOPs.
Ops without a FLOP formula (grid_sample in the deformable attention, elementwise ops) count 0. The
attention matmuls are counted too: the model calls ``nn.MultiheadAttention`` with
``need_weights=False``, which on CPU runs a fused attention kernel that ``FlopCounterMode`` has no
formula for, so one is supplied here (the official model's ``bmm`` path counts the same). This
gives N 7.3, S 25.5, M 57.0, L 91.6, X 203.1 GFLOPs at 640x640; the official README's rounded
figures come from calflops and are 0.3-2 % lower.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["ModelSummary", "count_parameters", "count_flops", "summarize"]


@dataclass(frozen=True)
class ModelSummary:
    """Size and cost of one model.

    Attributes:
        params: parameters of the model as given (the train layout for a freshly built model).
        deploy_params: parameters after ``deploy()``, the figure the paper and README report.
        gflops: GFLOPs of one ``image_size x image_size`` image through the deployed model.
        image_size: input side used for ``gflops``, in pixels.
    """

    params: int
    deploy_params: int
    gflops: float
    image_size: int


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements, each shared Parameter counted once (frozen ones included).

    Buffers (BN running stats, FrozenBatchNorm affine, anchors) are not parameters and not counted.
    """
    return sum(p.numel() for p in model.parameters())


def _attention_flops(query_shape: torch.Size, key_shape: torch.Size, value_shape: torch.Size, *args, **kwargs) -> int:
    """FLOPs of fused attention ``softmax(Q K^T) V``: 2 per multiply-add of its two matmuls.

    Shapes are ``[B, heads, L, E]`` for the query, ``[B, heads, S, E]`` / ``[B, heads, S, Ev]`` for
    key and value; softmax and scaling are not counted (as for ``bmm``).
    """
    batch, heads, query_len, dim = query_shape
    key_len, value_dim = key_shape[-2], value_shape[-1]
    return 2 * batch * heads * query_len * key_len * (dim + value_dim)


# The CPU kernel of scaled_dot_product_attention; FlopCounterMode counts only the CUDA kernels.
_EXTRA_FLOP_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _attention_flops}


def _deployed_copy(model: nn.Module) -> nn.Module:
    """A deep copy in inference form; ``model`` itself is left untouched."""
    deployed = copy.deepcopy(model)
    deploy = getattr(deployed, "deploy", None)
    return deploy() if deploy is not None else deployed.eval()


def _gflops(deployed: nn.Module, image_size: int) -> float:
    device = next(deployed.parameters()).device
    images = torch.zeros(1, 3, image_size, image_size, device=device)
    counter = FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOP_FORMULAS)
    with torch.no_grad(), counter:
        deployed(images)
    return counter.get_total_flops() / 1e9


def count_flops(model: nn.Module, image_size: int = 640) -> float:
    """GFLOPs of the deployed form of ``model`` for one ``image_size x image_size`` image.

    Works on a deep copy, so ``model`` (train or eval form) is not changed.

    Args:
        model: a D-FINE model (or any module taking ``[1, 3, H, W]``).
        image_size: input side in pixels, a multiple of 32.
    """
    return _gflops(_deployed_copy(model), image_size)


def summarize(model: nn.Module, image_size: int = 640) -> ModelSummary:
    """Parameter counts (as given and deployed) and GFLOPs, from a single deployed copy."""
    deployed = _deployed_copy(model)
    return ModelSummary(
        params=count_parameters(model),
        deploy_params=count_parameters(deployed),
        gflops=_gflops(deployed, image_size),
        image_size=image_size,
    )

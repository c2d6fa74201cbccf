"""Small building blocks shared by the backbone, the encoder and the decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConvNormLayer", "MLP", "activation_layer", "activation_in_place", "fuse_conv_bn"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
    "hardsigmoid": nn.Hardsigmoid,
}


def activation_layer(name: str | None) -> nn.Module:
    """An activation module by name (``None`` gives Identity)."""
    if name is None:
        return nn.Identity()
    key = name.lower()
    if key not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[key]()


def activation_in_place(act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``act(x)`` computed in place for ReLU and SiLU (same values, one buffer less).

    Only for the deploy forms (inference): call it on a fresh tensor that nothing else reads and that
    autograd does not keep (a conv or sum output).
    """
    if isinstance(act, nn.ReLU):
        return x.relu_()
    if isinstance(act, nn.SiLU):
        return F.silu(x, inplace=True)
    return act(x)


def fuse_conv_bn(conv: nn.Conv2d, bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of one conv equal to ``bn(conv(x))`` in eval mode."""
    std = (bn.running_var + bn.eps).sqrt()
    scale = bn.weight / std
    weight = conv.weight * scale.reshape(-1, 1, 1, 1)
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    return weight.detach(), bias.detach()


class ConvNormLayer(nn.Module):
    """Conv2d -> BatchNorm2d -> activation; ``convert_to_deploy`` folds the norm into ``conv_bn_fused``.

    Attribute names (``conv``, ``norm``, ``conv_bn_fused``) are the official checkpoint keys.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        padding: int | None = None,
        bias: bool = False,
        act: str | None = None,
    ) -> None:
        super().__init__()
        padding = (kernel_size - 1) // 2 if padding is None else padding
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=padding, groups=groups, bias=bias)
        self.norm = nn.BatchNorm2d(out_channels)
        self.act = activation_layer(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "conv_bn_fused"):  # deploy form
            return activation_in_place(self.act, self.conv_bn_fused(x))
        return self.act(self.norm(self.conv(x)))

    @torch.no_grad()
    def convert_to_deploy(self) -> None:
        if hasattr(self, "conv_bn_fused"):
            return
        conv = self.conv
        fused = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            padding=conv.padding,
            groups=conv.groups,
            bias=True,
        ).to(conv.weight.device, conv.weight.dtype)
        weight, bias = fuse_conv_bn(conv, self.norm)
        fused.weight.copy_(weight)
        fused.bias.copy_(bias)
        self.conv_bn_fused = fused
        del self.conv
        del self.norm


class MLP(nn.Module):
    """``num_layers`` Linear layers with an activation between them (none after the last)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int, act: str = "relu") -> None:
        super().__init__()
        hidden = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(
            nn.Linear(n_in, n_out) for n_in, n_out in zip([input_dim] + hidden, hidden + [output_dim])
        )
        self.act = activation_layer(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = self.act(x)
        return x

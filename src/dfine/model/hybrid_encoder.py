"""Hybrid encoder: AIFI (intra-scale attention on the coarsest level) + CCFF (cross-scale fusion).

D-FINE's CCFF uses RepNCSPELAN4 (CSP-ELAN with re-parameterizable VGG bottlenecks) for fusion and
SCDown (pointwise + depthwise stride-2) for downsampling. Attribute names follow the official
checkpoint keys (``cv1``..``cv4``, ``bottlenecks``, ``lateral_convs``...).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConvNormLayer, activation_in_place, activation_layer, fuse_conv_bn

__all__ = ["HybridEncoder", "sincos_position_embedding_2d"]


def sincos_position_embedding_2d(
    width: int, height: int, embed_dim: int = 256, temperature: float = 10000.0
) -> torch.Tensor:
    """2-D sin-cos position embedding, ``[1, width * height, embed_dim]``.

    Built with the official layout: the grid is flattened w-major (``meshgrid(w, h, indexing="ij")``)
    while features are flattened row-major, so on square maps the first half of the channels encodes
    the row index and the second half the column index. Kept as is for weight compatibility.
    """
    if embed_dim % 4 != 0:
        raise ValueError(f"embed_dim must be divisible by 4 for the 2-D sin-cos embedding, got {embed_dim}")
    grid_w, grid_h = torch.meshgrid(
        torch.arange(int(width), dtype=torch.float32),
        torch.arange(int(height), dtype=torch.float32),
        indexing="ij",
    )
    pos_dim = embed_dim // 4
    omega = 1.0 / (temperature ** (torch.arange(pos_dim, dtype=torch.float32) / pos_dim))
    out_w = grid_w.flatten()[:, None] @ omega[None]
    out_h = grid_h.flatten()[:, None] @ omega[None]
    return torch.cat([out_w.sin(), out_w.cos(), out_h.sin(), out_h.cos()], dim=1)[None]


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """``channels_last`` for a channels-last (and not also contiguous) 4-d tensor, else contiguous."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


class TransformerEncoderLayer(nn.Module):
    """Post-norm transformer encoder layer; the position embedding is added to queries and keys."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        normalize_before: bool = False,
    ) -> None:
        super().__init__()
        self.normalize_before = normalize_before
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = activation_layer(activation)

    def forward(self, src: torch.Tensor, pos_embed: torch.Tensor | None = None) -> torch.Tensor:
        """``src`` [B, L, D] -> [B, L, D]."""
        residual = src
        if self.normalize_before:
            src = self.norm1(src)
        q = k = src if pos_embed is None else src + pos_embed
        src, _ = self.self_attn(q, k, value=src, need_weights=False)
        src = residual + self.dropout1(src)
        if not self.normalize_before:
            src = self.norm1(src)

        residual = src
        if self.normalize_before:
            src = self.norm2(src)
        src = self.linear2(self.dropout(self.activation(self.linear1(src))))
        src = residual + self.dropout2(src)
        if not self.normalize_before:
            src = self.norm2(src)
        return src


class TransformerEncoder(nn.Module):
    """A stack of encoder layers (``layers.{i}`` in the checkpoint)."""

    def __init__(self, make_layer, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(make_layer() for _ in range(num_layers))

    def forward(self, src: torch.Tensor, pos_embed: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            src = layer(src, pos_embed=pos_embed)
        return src


class VGGBlock(nn.Module):
    """RepVGG block: 3x3 conv-BN + 1x1 conv-BN, summed; deploy merges both into one 3x3 ``conv``."""

    def __init__(self, in_channels: int, out_channels: int, act: str | None = "relu") -> None:
        super().__init__()
        self.conv1 = ConvNormLayer(in_channels, out_channels, 3, 1, padding=1)
        self.conv2 = ConvNormLayer(in_channels, out_channels, 1, 1, padding=0)
        self.act = activation_layer(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "conv"):  # deploy form
            return activation_in_place(self.act, self.conv(x))
        return self.act(self.conv1(x) + self.conv2(x))

    @torch.no_grad()
    def convert_to_deploy(self) -> None:
        if hasattr(self, "conv"):
            return
        weight3, bias3 = fuse_conv_bn(self.conv1.conv, self.conv1.norm)
        weight1, bias1 = fuse_conv_bn(self.conv2.conv, self.conv2.norm)
        conv = nn.Conv2d(weight3.shape[1], weight3.shape[0], 3, 1, padding=1).to(weight3.device, weight3.dtype)
        conv.weight.copy_(weight3 + F.pad(weight1, [1, 1, 1, 1]))
        conv.bias.copy_(bias3 + bias1)
        self.conv = conv
        del self.conv1
        del self.conv2


class CSPLayer(nn.Module):
    """Cross-stage partial layer: two 1x1 branches, VGG bottlenecks on one, summed."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_blocks: int = 3,
        expansion: float = 1.0,
        bias: bool = False,
        act: str = "silu",
    ) -> None:
        super().__init__()
        hidden_channels = int(out_channels * expansion)
        self.conv1 = ConvNormLayer(in_channels, hidden_channels, 1, 1, bias=bias, act=act)
        self.conv2 = ConvNormLayer(in_channels, hidden_channels, 1, 1, bias=bias, act=act)
        self.bottlenecks = nn.Sequential(
            *[VGGBlock(hidden_channels, hidden_channels, act=act) for _ in range(num_blocks)]
        )
        if hidden_channels != out_channels:
            self.conv3 = ConvNormLayer(hidden_channels, out_channels, 1, 1, bias=bias, act=act)
        else:
            self.conv3 = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.bottlenecks(self.conv1(x)) + self.conv2(x))


class RepNCSPELAN4(nn.Module):
    """CSP-ELAN fusion block (GELAN): split, two CSP+3x3 stages, concatenate all, 1x1 out.

    ``c1`` in, ``c2`` out, ``c3`` width after ``cv1`` (split in halves), ``c4`` width of each stage.
    """

    def __init__(
        self, c1: int, c2: int, c3: int, c4: int, num_blocks: int = 3, bias: bool = False, act: str = "silu"
    ) -> None:
        super().__init__()
        self.half = c3 // 2
        self.cv1 = ConvNormLayer(c1, c3, 1, 1, bias=bias, act=act)
        self.cv2 = nn.Sequential(
            CSPLayer(c3 // 2, c4, num_blocks, 1, bias=bias, act=act),
            ConvNormLayer(c4, c4, 3, 1, bias=bias, act=act),
        )
        self.cv3 = nn.Sequential(
            CSPLayer(c4, c4, num_blocks, 1, bias=bias, act=act),
            ConvNormLayer(c4, c4, 3, 1, bias=bias, act=act),
        )
        self.cv4 = ConvNormLayer(c3 + 2 * c4, c2, 1, 1, bias=bias, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).split((self.half, self.half), dim=1))
        y.append(self.cv2(y[-1]))
        y.append(self.cv3(y[-1]))
        return self.cv4(torch.cat(y, dim=1))


class SCDown(nn.Module):
    """Spatial-channel decoupled downsampling: 1x1 conv, then depthwise ``k``x``k`` with stride ``s``."""

    def __init__(self, c1: int, c2: int, k: int, s: int) -> None:
        super().__init__()
        self.cv1 = ConvNormLayer(c1, c2, 1, 1)
        self.cv2 = ConvNormLayer(c2, c2, k, s, groups=c2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv2(self.cv1(x))


class HybridEncoder(nn.Module):
    """AIFI on ``use_encoder_idx`` levels, then top-down FPN and bottom-up PAN fusion.

    Input: backbone features ``[B, in_channels[i], H_i, W_i]``; output: ``len(in_channels)`` maps of
    ``hidden_dim`` channels at the same strides.
    """

    def __init__(
        self,
        in_channels: tuple[int, ...] = (512, 1024, 2048),
        feat_strides: tuple[int, ...] = (8, 16, 32),
        hidden_dim: int = 256,
        nhead: int = 8,
        dim_feedforward: int = 1024,
        dropout: float = 0.0,
        enc_act: str = "gelu",
        use_encoder_idx: tuple[int, ...] = (2,),
        num_encoder_layers: int = 1,
        pe_temperature: float = 10000.0,
        expansion: float = 1.0,
        depth_mult: float = 1.0,
        act: str = "silu",
        eval_spatial_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if len(in_channels) != len(feat_strides):
            raise ValueError(
                f"HybridEncoder: in_channels {list(in_channels)} and feat_strides {list(feat_strides)} "
                "must have the same length"
            )
        self.in_channels = list(in_channels)
        self.feat_strides = list(feat_strides)
        self.hidden_dim = hidden_dim
        self.use_encoder_idx = list(use_encoder_idx)
        self.num_encoder_layers = num_encoder_layers
        self.pe_temperature = pe_temperature
        self.eval_spatial_size = list(eval_spatial_size) if eval_spatial_size else None
        self.out_channels = [hidden_dim] * len(in_channels)
        self.out_strides = list(feat_strides)

        self.input_proj = nn.ModuleList(
            nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(c, hidden_dim, kernel_size=1, bias=False),
                    norm=nn.BatchNorm2d(hidden_dim),
                )
            )
            for c in in_channels
        )

        def make_encoder_layer() -> TransformerEncoderLayer:
            return TransformerEncoderLayer(
                hidden_dim, nhead=nhead, dim_feedforward=dim_feedforward, dropout=dropout, activation=enc_act
            )

        self.encoder = nn.ModuleList(
            TransformerEncoder(make_encoder_layer, num_encoder_layers) for _ in self.use_encoder_idx
        )

        stage_width = round(expansion * hidden_dim // 2)
        num_blocks = round(3 * depth_mult)
        num_fusions = len(in_channels) - 1
        self.lateral_convs = nn.ModuleList()
        self.fpn_blocks = nn.ModuleList()
        for _ in range(num_fusions):
            self.lateral_convs.append(ConvNormLayer(hidden_dim, hidden_dim, 1, 1))
            self.fpn_blocks.append(
                RepNCSPELAN4(hidden_dim * 2, hidden_dim, hidden_dim * 2, stage_width, num_blocks, act=act)
            )
        self.downsample_convs = nn.ModuleList()
        self.pan_blocks = nn.ModuleList()
        for _ in range(num_fusions):
            self.downsample_convs.append(nn.Sequential(SCDown(hidden_dim, hidden_dim, 3, 2)))
            self.pan_blocks.append(
                RepNCSPELAN4(hidden_dim * 2, hidden_dim, hidden_dim * 2, stage_width, num_blocks, act=act)
            )

        if self.eval_spatial_size:
            for idx in self.use_encoder_idx:
                stride = self.feat_strides[idx]
                pos = sincos_position_embedding_2d(
                    self.eval_spatial_size[1] // stride,
                    self.eval_spatial_size[0] // stride,
                    hidden_dim,
                    pe_temperature,
                )
                # A plain attribute, not a buffer: the official state_dict has no position embedding.
                setattr(self, f"pos_embed{idx}", pos)

    def _position_embedding(self, level: int, height: int, width: int, ref: torch.Tensor) -> torch.Tensor:
        cached = getattr(self, f"pos_embed{level}", None)
        if self.training or cached is None or cached.shape[1] != height * width:
            cached = sincos_position_embedding_2d(width, height, self.hidden_dim, self.pe_temperature)
        return cached.to(device=ref.device, dtype=ref.dtype)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(feats) != len(self.in_channels):
            raise ValueError(f"HybridEncoder expects {len(self.in_channels)} feature maps, got {len(feats)}")
        proj_feats = [proj(feat) for proj, feat in zip(self.input_proj, feats)]

        for encoder, level in zip(self.encoder, self.use_encoder_idx):
            height, width = proj_feats[level].shape[2:]
            src = proj_feats[level].flatten(2).permute(0, 2, 1)  # [B, H*W, D]
            memory = encoder(src, pos_embed=self._position_embedding(level, height, width, src))
            memory = memory.permute(0, 2, 1).reshape(-1, self.hidden_dim, height, width)
            # keep the input's layout: a channels-last map stays channels-last (a free view here)
            proj_feats[level] = memory.contiguous(memory_format=_memory_format(proj_feats[level]))

        # top-down: coarse -> fine
        num_levels = len(self.in_channels)
        inner_outs = [proj_feats[-1]]
        for step, level in enumerate(range(num_levels - 1, 0, -1)):
            feat_high = self.lateral_convs[step](inner_outs[0])
            inner_outs[0] = feat_high
            upsampled = F.interpolate(feat_high, scale_factor=2.0, mode="nearest")
            inner_outs.insert(0, self.fpn_blocks[step](torch.cat([upsampled, proj_feats[level - 1]], dim=1)))

        # bottom-up: fine -> coarse
        outs = [inner_outs[0]]
        for step in range(num_levels - 1):
            downsampled = self.downsample_convs[step](outs[-1])
            outs.append(self.pan_blocks[step](torch.cat([downsampled, inner_outs[step + 1]], dim=1)))
        return outs

"""HGNetv2 backbone (PP-HGNetV2, as D-FINE uses it).

Stem (2x2 convs with asymmetric padding and a max-pool branch), then four stages of HG blocks. Each HG
block stacks ``layer_num`` convs, concatenates the input with every intermediate output and aggregates
with a squeeze 1x1 (to out/2) and an excitation 1x1 (to out). Stages 3 and 4 use light blocks
(1x1 then depthwise kxk). ``use_lab`` adds a learnable affine ``scale * x + bias`` after each ReLU.

Attribute names mirror the official checkpoint keys (``stem.stem1.conv``, ``stages.2.blocks.0.layers.1.conv2.lab``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

__all__ = ["HGNetv2", "HGNETV2_ARCHS", "StageSpec", "load_hgnetv2_pretrained"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageSpec:
    """One HGNetv2 stage: channels, block count and block kind."""

    in_channels: int
    mid_channels: int
    out_channels: int
    num_blocks: int
    downsample: bool
    light_block: bool
    kernel_size: int
    layer_num: int


@dataclass(frozen=True)
class HGNetv2Arch:
    stem_channels: tuple[int, int, int]  # (in, mid, out)
    stages: tuple[StageSpec, StageSpec, StageSpec, StageSpec]


def _arch(stem: tuple[int, int, int], *stages: tuple) -> HGNetv2Arch:
    return HGNetv2Arch(stem, tuple(StageSpec(*s) for s in stages))


# (in, mid, out, blocks, downsample, light, kernel, layer_num) per stage, from PP-HGNetV2.
HGNETV2_ARCHS: dict[str, HGNetv2Arch] = {
    "B0": _arch(
        (3, 16, 16),
        (16, 16, 64, 1, False, False, 3, 3),
        (64, 32, 256, 1, True, False, 3, 3),
        (256, 64, 512, 2, True, True, 5, 3),
        (512, 128, 1024, 1, True, True, 5, 3),
    ),
    "B1": _arch(
        (3, 24, 32),
        (32, 32, 64, 1, False, False, 3, 3),
        (64, 48, 256, 1, True, False, 3, 3),
        (256, 96, 512, 2, True, True, 5, 3),
        (512, 192, 1024, 1, True, True, 5, 3),
    ),
    "B2": _arch(
        (3, 24, 32),
        (32, 32, 96, 1, False, False, 3, 4),
        (96, 64, 384, 1, True, False, 3, 4),
        (384, 128, 768, 3, True, True, 5, 4),
        (768, 256, 1536, 1, True, True, 5, 4),
    ),
    "B3": _arch(
        (3, 24, 32),
        (32, 32, 128, 1, False, False, 3, 5),
        (128, 64, 512, 1, True, False, 3, 5),
        (512, 128, 1024, 3, True, True, 5, 5),
        (1024, 256, 2048, 1, True, True, 5, 5),
    ),
    "B4": _arch(
        (3, 32, 48),
        (48, 48, 128, 1, False, False, 3, 6),
        (128, 96, 512, 1, True, False, 3, 6),
        (512, 192, 1024, 3, True, True, 5, 6),
        (1024, 384, 2048, 1, True, True, 5, 6),
    ),
    "B5": _arch(
        (3, 32, 64),
        (64, 64, 128, 1, False, False, 3, 6),
        (128, 128, 512, 2, True, False, 3, 6),
        (512, 256, 1024, 5, True, True, 5, 6),
        (1024, 512, 2048, 2, True, True, 5, 6),
    ),
    "B6": _arch(
        (3, 48, 96),
        (96, 96, 192, 2, False, False, 3, 6),
        (192, 192, 512, 3, True, False, 3, 6),
        (512, 384, 1024, 6, True, True, 5, 6),
        (1024, 768, 2048, 3, True, True, 5, 6),
    ),
}


class LearnableAffineBlock(nn.Module):
    """``scale * x + bias`` with two learnable scalars (the "lab" of PP-HGNetV2)."""

    def __init__(self, scale_value: float = 1.0, bias_value: float = 0.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([scale_value]))
        self.bias = nn.Parameter(torch.tensor([bias_value]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x + self.bias


class ConvBNAct(nn.Module):
    """Conv (no bias) -> BN -> optional ReLU -> optional learnable affine.

    The reference computation, for every use; ``dfine.model.fast_paths`` holds the inference and
    training variants (same parameters, swapped in by ``DFINE.deploy`` and the trainer).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        use_act: bool = True,
        use_lab: bool = False,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding=(kernel_size - 1) // 2,
            groups=groups,
            bias=False,
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU() if use_act else nn.Identity()
        self.lab = LearnableAffineBlock() if (use_act and use_lab) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lab(self.act(self.bn(self.conv(x))))


class LightConvBNAct(nn.Module):
    """1x1 conv without activation, then a depthwise kxk conv with activation."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, use_lab: bool = False) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(in_channels, out_channels, 1, use_act=False, use_lab=use_lab)
        self.conv2 = ConvBNAct(out_channels, out_channels, kernel_size, groups=out_channels, use_lab=use_lab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class StemBlock(nn.Module):
    """Stride-4 stem: 3x3/2 conv, then a 2x2-conv branch beside a max-pool branch, then 3x3/2 and 1x1."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, use_lab: bool = False) -> None:
        super().__init__()
        self.stem1 = ConvBNAct(in_channels, mid_channels, 3, stride=2, use_lab=use_lab)
        self.stem2a = ConvBNAct(mid_channels, mid_channels // 2, 2, use_lab=use_lab)
        self.stem2b = ConvBNAct(mid_channels // 2, mid_channels, 2, use_lab=use_lab)
        self.stem3 = ConvBNAct(mid_channels * 2, mid_channels, 3, stride=2, use_lab=use_lab)
        self.stem4 = ConvBNAct(mid_channels, out_channels, 1, use_lab=use_lab)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=1, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(self.stem1(x), (0, 1, 0, 1))  # right/bottom pad keeps H, W through the 2x2 ops
        branch_conv = self.stem2b(F.pad(self.stem2a(x), (0, 1, 0, 1)))
        branch_pool = self.pool(x)
        x = torch.cat([branch_pool, branch_conv], dim=1)
        return self.stem4(self.stem3(x))


class HGBlock(nn.Module):
    """``layer_num`` stacked convs, dense concatenation, squeeze-excitation 1x1 aggregation."""

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        layer_num: int,
        kernel_size: int = 3,
        residual: bool = False,
        light_block: bool = False,
        use_lab: bool = False,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.residual = residual
        self.layers = nn.ModuleList()
        for i in range(layer_num):
            layer_in = in_channels if i == 0 else mid_channels
            if light_block:
                self.layers.append(LightConvBNAct(layer_in, mid_channels, kernel_size, use_lab=use_lab))
            else:
                self.layers.append(ConvBNAct(layer_in, mid_channels, kernel_size, use_lab=use_lab))
        total_channels = in_channels + layer_num * mid_channels
        self.aggregation = nn.Sequential(
            ConvBNAct(total_channels, out_channels // 2, 1, use_lab=use_lab),  # squeeze
            ConvBNAct(out_channels // 2, out_channels, 1, use_lab=use_lab),  # excitation
        )
        # The official code calls this "drop_path" but applies element-wise dropout; keep its behaviour.
        self.dropout = nn.Dropout(drop_path) if drop_path else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        outputs = [x]
        for layer in self.layers:
            x = layer(x)
            outputs.append(x)
        x = self.aggregation(torch.cat(outputs, dim=1))
        if self.residual:
            x = self.dropout(x) + identity
        return x


class HGStage(nn.Module):
    """Optional depthwise 3x3/2 downsample, then ``num_blocks`` HG blocks (residual after the first)."""

    def __init__(self, spec: StageSpec, use_lab: bool = False, drop_path: float = 0.0) -> None:
        super().__init__()
        if spec.downsample:
            self.downsample = ConvBNAct(
                spec.in_channels,
                spec.in_channels,
                3,
                stride=2,
                groups=spec.in_channels,
                use_act=False,
                use_lab=use_lab,
            )
        else:
            self.downsample = nn.Identity()
        self.blocks = nn.Sequential(
            *[
                HGBlock(
                    spec.in_channels if i == 0 else spec.out_channels,
                    spec.mid_channels,
                    spec.out_channels,
                    spec.layer_num,
                    kernel_size=spec.kernel_size,
                    residual=i > 0,
                    light_block=spec.light_block,
                    use_lab=use_lab,
                    drop_path=drop_path,
                )
                for i in range(spec.num_blocks)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


def _freeze_batch_norms(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d below ``module`` by a FrozenBatchNorm2d holding the same statistics."""
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        frozen.weight.copy_(module.weight.detach())
        frozen.bias.copy_(module.bias.detach())
        frozen.running_mean.copy_(module.running_mean)
        frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        new_child = _freeze_batch_norms(child)
        if new_child is not child:
            setattr(module, name, new_child)
    return module


class HGNetv2(nn.Module):
    """HGNetv2 backbone returning the feature maps of the stages in ``return_idx``.

    Args:
        name: architecture, one of ``B0``..``B6``.
        use_lab: learnable affine after each activation (N, S, M).
        return_idx: stage indices (0..3) whose outputs are returned, at strides 4, 8, 16, 32.
        freeze_stem_only: with ``freeze_at >= 0``, freeze only the stem.
        freeze_at: freeze the stem and stages ``0..freeze_at`` (-1: nothing frozen).
        freeze_norm: replace all BatchNorm2d by FrozenBatchNorm2d (L, X).

    Input ``[B, 3, H, W]`` in [0, 1]; output a list of ``[B, C_i, H / s_i, W / s_i]``.
    Pretrained ImageNet weights are loaded with :func:`load_hgnetv2_pretrained`, never here.
    """

    def __init__(
        self,
        name: str = "B4",
        use_lab: bool = False,
        return_idx: tuple[int, ...] = (1, 2, 3),
        freeze_stem_only: bool = True,
        freeze_at: int = 0,
        freeze_norm: bool = True,
    ) -> None:
        super().__init__()
        if name not in HGNETV2_ARCHS:
            raise ValueError(f"unknown HGNetv2 name {name!r}; choose one of {sorted(HGNETV2_ARCHS)}")
        bad_idx = [i for i in return_idx if not 0 <= i <= 3]
        if bad_idx or not return_idx:
            raise ValueError(f"HGNetv2 return_idx must list stage indices in 0..3, got {list(return_idx)}")
        arch = HGNETV2_ARCHS[name]
        self.name = name
        self.use_lab = use_lab
        self.return_idx = list(return_idx)
        self.out_channels = [arch.stages[i].out_channels for i in return_idx]
        self.out_strides = [4 * 2**i for i in return_idx]

        self.stem = StemBlock(*arch.stem_channels, use_lab=use_lab)
        self.stages = nn.ModuleList(HGStage(spec, use_lab=use_lab) for spec in arch.stages)

        if freeze_at >= 0:
            self._freeze_parameters(self.stem)
            if not freeze_stem_only:
                for stage in self.stages[: freeze_at + 1]:
                    self._freeze_parameters(stage)
        if freeze_norm:
            _freeze_batch_norms(self)

    @staticmethod
    def _freeze_parameters(module: nn.Module) -> None:
        for p in module.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outputs = []
        for idx, stage in enumerate(self.stages):
            x = stage(x)
            if idx in self.return_idx:
                outputs.append(x)
        return outputs


def pretrained_filename(name: str) -> str:
    """File name of the ImageNet stage-1 weights the official code expects in ``local_model_dir``."""
    return f"PPHGNetV2_{name}_stage1.pth"


def load_hgnetv2_pretrained(backbone: HGNetv2, path: str | Path) -> None:
    """Load ImageNet-pretrained HGNetv2 weights from a local file or a ``local_model_dir`` folder.

    The folder form looks for ``PPHGNetV2_{name}_stage1.pth`` as the official code does. Raises
    ``FileNotFoundError`` with the expected location when the file is absent (no download is tried).
    """
    path = Path(path)
    if path.is_dir():
        path = path / pretrained_filename(backbone.name)
    if not path.is_file():
        raise FileNotFoundError(
            f"HGNetv2 {backbone.name} pretrained weights not found at {path}. Put "
            f"{pretrained_filename(backbone.name)} there (from the PP-HGNetV2 release), or set "
            "HGNetv2.pretrained: False to start from random weights."
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    own = backbone.state_dict()
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if mismatched:
        raise ValueError(
            f"{path}: pretrained weights do not fit HGNetv2 {backbone.name} "
            f"(shape mismatch at {mismatched[:5]}); is it the file for another size?"
        )
    result = backbone.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    unexpected = [k for k in result.unexpected_keys if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(
            f"{path}: not an HGNetv2 {backbone.name} state_dict (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    logger.info("loaded HGNetv2 %s ImageNet weights from %s", backbone.name, path)

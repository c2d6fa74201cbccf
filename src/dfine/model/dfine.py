"""The D-FINE detector: HGNetv2 backbone -> hybrid encoder -> FDR decoder."""

from __future__ import annotations

import torch
from torch import nn

from ..config.presets import ModelConfig
from .decoder import DFINETransformer
from .fast_paths import use_inference_paths
from .hgnetv2 import HGNetv2
from .hybrid_encoder import HybridEncoder
from .outputs import DFINEOutputs

__all__ = ["DFINE", "fast_deploy_flags"]


class DFINE(nn.Module):
    """D-FINE detector.

    ``model(images)`` with ``images [B, 3, H, W]`` in [0, 1] (H, W multiples of 32) returns
    :class:`~dfine.model.outputs.DFINEOutputs` with ``logits [B, Q, C]`` and ``boxes [B, Q, 4]``, boxes
    cxcywh normalized to the input. In train mode, ``model(images, targets=...)`` returns the same type
    with the auxiliary heads the criterion needs filled in.
    """

    def __init__(self, backbone: HGNetv2, encoder: HybridEncoder, decoder: DFINETransformer) -> None:
        super().__init__()
        # registration order fixes the state_dict order: the official one is backbone, decoder, encoder
        self.backbone = backbone
        self.decoder = decoder
        self.encoder = encoder
        self.config: ModelConfig | None = None  # the architecture, when built by from_config

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> DFINE:
        """Build the detector described by ``cfg`` (random weights; the backbone is not pretrained)."""
        b, e, d = cfg.backbone, cfg.encoder, cfg.decoder
        backbone = HGNetv2(
            name=b.name,
            use_lab=b.use_lab,
            return_idx=b.return_idx,
            freeze_stem_only=b.freeze_stem_only,
            freeze_at=b.freeze_at,
            freeze_norm=b.freeze_norm,
        )
        if list(e.in_channels) != backbone.out_channels:
            raise ValueError(
                f"HybridEncoder.in_channels {list(e.in_channels)} do not match HGNetv2 {b.name} "
                f"return_idx {list(b.return_idx)} (channels {backbone.out_channels})"
            )
        encoder = HybridEncoder(
            in_channels=e.in_channels,
            feat_strides=e.feat_strides,
            hidden_dim=e.hidden_dim,
            nhead=e.nhead,
            dim_feedforward=e.dim_feedforward,
            dropout=e.dropout,
            enc_act=e.enc_act,
            use_encoder_idx=e.use_encoder_idx,
            num_encoder_layers=e.num_encoder_layers,
            pe_temperature=e.pe_temperature,
            expansion=e.expansion,
            depth_mult=e.depth_mult,
            act=e.act,
            eval_spatial_size=e.eval_spatial_size,
        )
        if list(d.feat_channels) != encoder.out_channels:
            raise ValueError(
                f"DFINETransformer.feat_channels {list(d.feat_channels)} do not match the encoder's "
                f"output channels {encoder.out_channels} (HybridEncoder.hidden_dim)"
            )
        decoder = DFINETransformer(
            num_classes=cfg.num_classes,
            hidden_dim=d.hidden_dim,
            num_queries=d.num_queries,
            feat_channels=d.feat_channels,
            feat_strides=d.feat_strides,
            num_levels=d.num_levels,
            num_points=list(d.num_points),
            nhead=d.nhead,
            num_layers=d.num_layers,
            dim_feedforward=d.dim_feedforward,
            dropout=d.dropout,
            activation=d.activation,
            num_denoising=d.num_denoising,
            label_noise_ratio=d.label_noise_ratio,
            box_noise_scale=d.box_noise_scale,
            learn_query_content=d.learn_query_content,
            eval_spatial_size=d.eval_spatial_size,
            eval_idx=d.eval_idx,
            eps=d.eps,
            aux_loss=d.aux_loss,
            cross_attn_method=d.cross_attn_method,
            query_select_method=d.query_select_method,
            reg_max=d.reg_max,
            reg_scale=d.reg_scale,
            layer_scale=d.layer_scale,
        )
        model = cls(backbone, encoder, decoder)
        model.config = cfg
        return model

    @property
    def num_classes(self) -> int:
        return self.decoder.num_classes

    def forward(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]] | None = None) -> DFINEOutputs:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W], got shape {list(images.shape)}")
        return self.decoder(self.encoder(self.backbone(images)), targets)

    def deploy(
        self, *, fold_backbone_bn: bool = False, channels_last: bool = False, gather_sampling: bool = False
    ) -> DFINE:
        """Convert in place to the inference form and return ``self`` (idempotent; flags add up).

        Sets eval mode, folds BatchNorm into the encoder's convs, merges the RepVGG branches, drops
        the decoder heads that inference never runs and precomputes the FDR bin values, as the
        official ``convert_to_deploy`` does, and swaps in the exact inference paths of
        :mod:`dfine.model.fast_paths` (in-place activations, the slice max-pool). Outputs equal the
        eval-mode outputs bitwise; the state_dict is the official deploy layout.

        The three flags are CPU speedups that change the fp32 rounding: logits then differ from the
        official fp32 outputs by up to ~2e-4, about as far as those are from a float64 evaluation of
        the same weights (see ``benchmarks/RESULTS.md``). None changes the state_dict keys or shapes.
        ``dfine.DFINE`` (the predict API) turns them on; exporters leave them off.

        Args:
            fold_backbone_bn: also fold the backbone's BatchNorms (and positive LAB scales) into its
                convs, through a cache outside the state_dict (the official deploy keeps them).
            channels_last: store the conv weights channels-last, so that convolutions and the ops
                between them run in NHWC, which oneDNN runs without layout conversions.
            gather_sampling: the decoder's deformable attention samples by gather (``embedding_bag``)
                instead of ``grid_sample``: faster on the CPU, not exportable to ONNX.
        """
        self.eval()
        for module in self.modules():
            convert = getattr(module, "convert_to_deploy", None)
            if convert is not None:
                convert()
        use_inference_paths(self, fold_batch_norm=fold_backbone_bn, gather_sampling=gather_sampling)
        if channels_last:
            self.to(memory_format=torch.channels_last)
        return self


def fast_deploy_flags(device: torch.device) -> dict[str, bool]:
    """The :meth:`DFINE.deploy` speedups that inference (``dfine.DFINE``, the torch backend) turns on.

    BatchNorm folding and channels-last everywhere; gather sampling on the CPU only (measured there).
    Measured effect and parity in ``benchmarks/RESULTS.md``; exporters keep the official arithmetic.
    """
    return {"fold_backbone_bn": True, "channels_last": True, "gather_sampling": device.type == "cpu"}

"""What the D-FINE model returns: the final head's predictions and, in training, every head the criterion supervises.

One type in both modes: ``model(images)`` and ``model(images, targets=...)`` both return :class:`DFINEOutputs`;
eval mode leaves the training-only parts empty. Boxes are cxcywh normalized to the input image throughout (the
post-processor turns them into pixels). Shapes: ``B`` images, ``Q`` queries (``N_dn`` denoising queries), ``C``
classes, ``R = reg_max + 1`` bins per box edge. The types compare by identity (``eq=False``): tensors have no
single truth value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .denoising import DenoisingGroup

__all__ = ["DFINEOutputs", "DenoisingOutputs", "HeadOutputs"]


@dataclass(frozen=True, eq=False)
class HeadOutputs:
    """The predictions of one head (a decoder layer, the pre-decoder head or the encoder head).

    Attributes:
        logits: ``[B, Q, C]`` class logits (sigmoid scores); ``C = 1`` for a class-agnostic encoder head.
        boxes: ``[B, Q, 4]`` boxes, cxcywh normalized to the input.
        corners: ``[B, Q, 4 * R]`` FDR edge-distribution logits (left, top, right, bottom); None for the
            pre-decoder and encoder heads, which predict boxes directly.
        ref_points: ``[B, Q, 4]`` cxcywh initial boxes that ``corners`` are measured from; None with ``corners``.
        teacher_corners: ``[B, Q, 4 * R]`` the last layer's corners, which this layer distils (GO-LSD DDF);
            None for the final head and the heads without corners.
        teacher_logits: ``[B, Q, C]`` the last layer's logits, weighting the distillation; None with
            ``teacher_corners``.
    """

    logits: torch.Tensor
    boxes: torch.Tensor
    corners: torch.Tensor | None = None
    ref_points: torch.Tensor | None = None
    teacher_corners: torch.Tensor | None = None
    teacher_logits: torch.Tensor | None = None


@dataclass(frozen=True, eq=False)
class DenoisingOutputs:
    """The decoder's predictions for the denoising queries (training only).

    Attributes:
        layers: one head per decoder layer on the ``N_dn`` denoising queries; each distils the last one.
        pre: the pre-decoder head on the denoising queries.
        group: the denoising group they were built from (its ``positive_idx`` and ``num_group`` give the
            known matching to the ground truth).
    """

    layers: list[HeadOutputs]
    pre: HeadOutputs
    group: DenoisingGroup


@dataclass(frozen=True, eq=False)
class DFINEOutputs(HeadOutputs):
    """The model's outputs: the final decoder layer's predictions (the fields of :class:`HeadOutputs`; its teacher
    fields are None, the final layer being the teacher), the FDR constants, and in training the auxiliary heads.

    Attributes:
        up: ``[1]`` FDR weighting-function constant (the model's frozen Parameter).
        reg_scale: ``[1]`` FDR box scale (the model's frozen Parameter).
        aux: the decoder layers before the final one, first to last; empty in eval mode or without ``aux_loss``.
        pre: the pre-decoder head (first layer's initial boxes); None in eval mode or without ``aux_loss``.
        encoder: the encoder's top-k query-selection head(s); empty in eval mode or without ``aux_loss``.
        denoising: the denoising queries' predictions; None in eval mode, without ``aux_loss`` or when no
            denoising queries were built.
        class_agnostic_encoder: the encoder head has one logit (``query_select_method: agnostic``): supervise it
            with every object as class 0.
    """

    up: torch.Tensor | None = None
    reg_scale: torch.Tensor | None = None
    aux: list[HeadOutputs] = field(default_factory=list)
    pre: HeadOutputs | None = None
    encoder: list[HeadOutputs] = field(default_factory=list)
    denoising: DenoisingOutputs | None = None
    class_agnostic_encoder: bool = False

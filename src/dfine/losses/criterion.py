"""The D-FINE criterion: which loss runs on which head with which matching, weighted once.

Heads and their matchings (as the official criterion):

* final layer, auxiliary layers: VFL on the layer's own matching; L1/GIoU and FGL on the GO-LSD
  union matching; DDF (auxiliary layers only) distils the final layer's distributions.
* pre head (first-layer boxes): VFL on its own matching, L1/GIoU on the union matching.
* encoder head: VFL on its own matching, L1/GIoU on the union matching.
* denoising layers and pre head: all losses on the known denoising matching.

VFL normalizes by the number of target boxes; the union-matched losses by the union's size; both are
averaged over ranks under torch.distributed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..model.denoising import DenoisingGroup
from ..model.fdr import bbox2distance
from ..model.outputs import DenoisingOutputs, DFINEOutputs, HeadOutputs
from ..ops.boxes import box_cxcywh_to_xyxy
from . import functional as L
from .matcher import HungarianMatcher, Matching, union_of_matchings

__all__ = ["DFINECriterion", "LossWeights"]

LOSS_NAMES = ("vfl", "boxes", "local")


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms (official ``weight_dict``)."""

    loss_vfl: float = 1.0
    loss_bbox: float = 5.0
    loss_giou: float = 2.0
    loss_fgl: float = 0.15
    loss_ddf: float = 1.5

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class _Head:
    """One supervised head: its predictions, its matchings and their normalizer.

    ``own_matching`` feeds VFL; ``box_matching`` (normalized by ``box_num``) feeds L1/GIoU, FGL and DDF.
    """

    suffix: str
    outputs: HeadOutputs
    own_matching: Matching
    box_matching: Matching
    box_num: float
    is_dn: bool = False
    targets: list[dict] | None = None  # the head's own targets (class 0 for an agnostic encoder), else the batch's


def _average_over_ranks(count: float, device: torch.device) -> float:
    value = torch.as_tensor([count], dtype=torch.float, device=device)
    world = 1
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(value)
        world = dist.get_world_size()
    return torch.clamp(value / world, min=1).item()


def _matched_idx(matching: Matching) -> tuple[torch.Tensor, torch.Tensor]:
    batch = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(matching)])
    query = torch.cat([src for src, _ in matching])
    return batch, query


def _gather_targets(targets: list[dict], matching: Matching, key: str) -> torch.Tensor:
    return torch.cat([t[key][j] for t, (_, j) in zip(targets, matching)], dim=0)


def denoising_matching(group: DenoisingGroup, targets: list[dict]) -> Matching:
    """The fixed matching of the positive denoising queries to their ground-truth boxes."""
    device = targets[0]["labels"].device
    matching = []
    for positive_idx, target in zip(group.positive_idx, targets):
        num_gt = len(target["labels"])
        if num_gt > 0:
            gt_idx = torch.arange(num_gt, dtype=torch.int64, device=device).tile(group.num_group)
            matching.append((positive_idx, gt_idx))
        else:
            empty = torch.zeros(0, dtype=torch.int64, device=device)
            matching.append((empty, empty))
    return matching


class DFINECriterion(nn.Module):
    """Matches, then computes VFL, L1, GIoU, FGL and DDF on every head; returns weighted terms.

    Args:
        matcher: the Hungarian matcher.
        weights: loss weights; a term whose weight is missing is not returned.
        losses: which loss groups run (``vfl``, ``boxes``, ``local``).
        alpha, gamma: VFL parameters (official 0.75, 2).
        num_classes: classes of the logits.
        reg_max: FDR bins minus one.

    ``criterion(outputs, targets)`` takes the model's :class:`~dfine.model.outputs.DFINEOutputs` and returns
    ``{"loss_vfl": ..., "loss_bbox_aux_0": ..., ...}``, each already multiplied by its weight. The criterion
    keeps no state between calls.
    """

    def __init__(
        self,
        matcher: HungarianMatcher | None = None,
        weights: LossWeights | dict[str, float] | None = None,
        losses: tuple[str, ...] = LOSS_NAMES,
        alpha: float = 0.75,
        gamma: float = 2.0,
        num_classes: int = 80,
        reg_max: int = 32,
    ) -> None:
        super().__init__()
        unknown = [name for name in losses if name not in LOSS_NAMES]
        if unknown:
            raise ValueError(f"unknown loss {unknown[0]!r}; choose from {LOSS_NAMES}")
        self.matcher = matcher if matcher is not None else HungarianMatcher()
        if weights is None:
            weights = LossWeights()
        self.weight_dict = weights.as_dict() if isinstance(weights, LossWeights) else dict(weights)
        self.losses = tuple(losses)
        self.alpha = alpha
        self.gamma = gamma
        self.num_classes = num_classes
        self.reg_max = reg_max

    def forward(self, outputs: DFINEOutputs, targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Weighted loss terms of every head in ``outputs`` (the model's train-mode outputs).

        ``targets[i]`` holds ``labels [n_i]`` and ``boxes [n_i, 4]`` (cxcywh normalized).
        """
        device = outputs.logits.device
        num_boxes = _average_over_ranks(sum(len(t["labels"]) for t in targets), device)
        heads, union = self._decoder_heads(outputs, targets, num_boxes)
        heads += self._denoising_heads(outputs.denoising, targets, num_boxes)
        batch, num_queries = outputs.logits.shape[:2]
        num_pos, num_neg = L.ddf_balance(sum(len(rows) for rows, _ in union), batch, num_queries, device)

        losses: dict[str, torch.Tensor] = {}
        for head in heads:
            vfl_num = head.box_num if head.is_dn else num_boxes
            terms = self._head_losses(head, head.targets or targets, vfl_num, outputs, num_pos, num_neg)
            for name, value in terms.items():
                if name in self.weight_dict:
                    losses[name + head.suffix] = torch.nan_to_num(value * self.weight_dict[name], nan=0.0)
        return losses

    def _decoder_heads(
        self, outputs: DFINEOutputs, targets: list[dict], num_boxes: float
    ) -> tuple[list[_Head], Matching]:
        """The final, auxiliary, pre-decoder and encoder heads, each with its own matching, and the GO-LSD union
        of those matchings on which all of them learn their boxes."""
        main_matching = self.matcher(outputs, targets)
        aux_matchings = [self.matcher(a, targets) for a in outputs.aux]
        pre_matching = self.matcher(outputs.pre, targets) if outputs.pre is not None else None
        # a class-agnostic encoder head (query_select_method: agnostic) has one logit: every object is class 0 there
        enc_targets = targets
        if outputs.class_agnostic_encoder:
            enc_targets = [{**t, "labels": torch.zeros_like(t["labels"])} for t in targets]
        enc_matchings = [self.matcher(e, enc_targets) for e in outputs.encoder]
        others = aux_matchings + ([pre_matching] if pre_matching is not None else []) + enc_matchings
        if others:
            union = union_of_matchings([main_matching] + others)
            num_union = _average_over_ranks(sum(len(rows) for rows, _ in union), outputs.logits.device)
        else:
            union, num_union = main_matching, num_boxes

        heads = [_Head("", outputs, main_matching, union, num_union)]
        heads += [
            _Head(f"_aux_{i}", a, m, union, num_union) for i, (a, m) in enumerate(zip(outputs.aux, aux_matchings))
        ]
        if outputs.pre is not None:
            heads.append(_Head("_pre", outputs.pre, pre_matching, union, num_union))
        heads += [
            _Head(f"_enc_{i}", e, m, union, num_union, targets=enc_targets)
            for i, (e, m) in enumerate(zip(outputs.encoder, enc_matchings))
        ]
        return heads, union

    @staticmethod
    def _denoising_heads(denoising: DenoisingOutputs | None, targets: list[dict], num_boxes: float) -> list[_Head]:
        """The denoising layers and pre-decoder head, all on the known matching to the ground truth."""
        if denoising is None:
            return []
        matching = denoising_matching(denoising.group, targets)
        num = max(num_boxes * denoising.group.num_group, 1)
        heads = [_Head(f"_dn_{i}", dn, matching, matching, num, is_dn=True) for i, dn in enumerate(denoising.layers)]
        heads.append(_Head("_dn_pre", denoising.pre, matching, matching, num, is_dn=True))
        return heads

    def _head_losses(
        self,
        head: _Head,
        targets: list[dict],
        vfl_num: float,
        model_outputs: DFINEOutputs,
        num_pos: torch.Tensor,
        num_neg: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        out = head.outputs
        terms: dict[str, torch.Tensor] = {}
        if "vfl" in self.losses:
            idx = _matched_idx(head.own_matching)
            ious = L.paired_iou(out.boxes[idx], _gather_targets(targets, head.own_matching, "boxes")).detach()
            labels = _gather_targets(targets, head.own_matching, "labels")
            terms["loss_vfl"] = L.varifocal_loss(out.logits, idx, labels, ious, vfl_num, self.alpha, self.gamma)
        if "boxes" in self.losses:
            idx = _matched_idx(head.box_matching)
            src = out.boxes[idx]
            tgt = _gather_targets(targets, head.box_matching, "boxes")
            terms["loss_bbox"] = L.l1_box_loss(src, tgt, head.box_num)
            terms["loss_giou"] = L.giou_box_loss(src, tgt, head.box_num)
        if "local" in self.losses and out.corners is not None:
            terms.update(
                self._local_losses(out, targets, head.box_matching, head.box_num, model_outputs, num_pos, num_neg)
            )
        return terms

    def _local_losses(
        self,
        out: HeadOutputs,
        targets: list[dict],
        matching: Matching,
        num: float,
        model_outputs: DFINEOutputs,
        num_pos: torch.Tensor,
        num_neg: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """FGL on the matched edges, and DDF where the head has a GO-LSD teacher (``model_outputs`` gives the FDR
        constants ``up`` and ``reg_scale``)."""
        up, reg_scale = model_outputs.up, model_outputs.reg_scale
        if up is None or reg_scale is None or out.ref_points is None:
            raise ValueError("outputs with corners need ref_points, up and reg_scale for the FGL/DDF losses")
        idx = _matched_idx(matching)
        target_boxes = _gather_targets(targets, matching, "boxes")
        bins = self.reg_max + 1
        with torch.no_grad():
            target_bins, weight_right, weight_left = bbox2distance(
                out.ref_points[idx].detach(),
                box_cxcywh_to_xyxy(target_boxes),
                self.reg_max,
                reg_scale,
                up,
            )
        ious = L.paired_iou(out.boxes[idx], target_boxes)
        terms = {
            "loss_fgl": L.fine_grained_localization_loss(
                out.corners[idx].reshape(-1, bins), target_bins, weight_right, weight_left, ious, num
            )
        }
        if out.teacher_corners is not None:
            terms["loss_ddf"] = L.decoupled_distillation_loss(
                out.corners, out.teacher_corners, out.teacher_logits, idx, ious, num_pos, num_neg
            )
        return terms

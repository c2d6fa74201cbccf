"""D-FINE decoder: query selection, deformable decoder layers with gated fusion, FDR box refinement
and the LQE-corrected classification.

Layer ``i`` refines the edge distributions of layer ``i - 1``:
``corners_i = bbox_head_i(out_i + out_{i-1}.detach()) + corners_{i-1}``, and every layer decodes
its boxes relative to the same initial boxes (the pre-bbox head's output). Attribute names follow
the official checkpoint keys (``decoder.decoder.layers.{i}``, ``dec_bbox_head``, ``lqe_layers``...).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.boxes import inverse_sigmoid
from .deformable_attention import MSDeformableAttention
from .denoising import DenoisingGroup, build_denoising_group
from .fdr import distance2bbox, distribution_integral, weighting_function
from .layers import MLP, activation_layer
from .lqe import LQE
from .outputs import DenoisingOutputs, DFINEOutputs, HeadOutputs
from .query_selection import generate_anchors, select_topk

__all__ = ["DFINETransformer", "TransformerDecoderLayer", "Gate"]

FP16_MAX = torch.finfo(torch.float16).max  # norm3 input clamp, keeps fp16 inference finite
QUERY_POS_CLAMP = 10.0  # query position embedding clamp (official value)
LQE_TOPK, LQE_HIDDEN, LQE_LAYERS = 4, 64, 2


def _bias_init_with_prob(prior_prob: float) -> float:
    """Logit bias so that sigmoid(bias) equals ``prior_prob``."""
    return float(-torch.log(torch.tensor((1 - prior_prob) / prior_prob)))


class Gate(nn.Module):
    """Gated fusion of the self-attention stream and the cross-attention output:
    ``LN(sigmoid(g1) * x1 + sigmoid(g2) * x2)`` with ``[g1, g2] = Linear([x1, x2])``."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.gate = nn.Linear(2 * d_model, 2 * d_model)
        nn.init.constant_(self.gate.bias, _bias_init_with_prob(0.5))
        nn.init.constant_(self.gate.weight, 0)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        gates = torch.sigmoid(self.gate(torch.cat([x1, x2], dim=-1)))
        gate1, gate2 = gates.chunk(2, dim=-1)
        return self.norm(gate1 * x1 + gate2 * x2)


class TransformerDecoderLayer(nn.Module):
    """Self-attention -> deformable cross-attention -> gate -> FFN (post-norm)."""

    def __init__(
        self,
        d_model: int = 256,
        n_head: int = 8,
        dim_feedforward: int = 1024,
        dropout: float = 0.0,
        activation: str = "relu",
        n_levels: int = 4,
        n_points: int | list[int] = 4,
        cross_attn_method: str = "default",
        layer_scale: float | None = None,
    ) -> None:
        super().__init__()
        if layer_scale is not None:
            dim_feedforward = round(layer_scale * dim_feedforward)
            d_model = round(layer_scale * d_model)
        self.self_attn = nn.MultiheadAttention(d_model, n_head, dropout=dropout, batch_first=True)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.cross_attn = MSDeformableAttention(d_model, n_head, n_levels, n_points, method=cross_attn_method)
        self.dropout2 = nn.Dropout(dropout)
        self.gateway = Gate(d_model)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.activation = activation_layer(activation)
        self.dropout3 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout4 = nn.Dropout(dropout)
        self.norm3 = nn.LayerNorm(d_model)
        nn.init.xavier_uniform_(self.linear1.weight)
        nn.init.xavier_uniform_(self.linear2.weight)

    def forward(
        self,
        target: torch.Tensor,
        reference_points: torch.Tensor,
        value: list[torch.Tensor],
        spatial_shapes: list[tuple[int, int]],
        attn_mask: torch.Tensor | None = None,
        query_pos_embed: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``target`` [B, Q, D], ``reference_points`` [B, Q, 1, 4] -> [B, Q, D]."""
        q = k = target if query_pos_embed is None else target + query_pos_embed
        attended, _ = self.self_attn(q, k, value=target, attn_mask=attn_mask, need_weights=False)
        target = self.norm1(target + self.dropout1(attended))

        query = target if query_pos_embed is None else target + query_pos_embed
        cross = self.cross_attn(query, reference_points, value, spatial_shapes)
        target = self.gateway(target, self.dropout2(cross))

        ffn = self.linear2(self.dropout3(self.activation(self.linear1(target))))
        target = target + self.dropout4(ffn)
        return self.norm3(target.clamp(min=-FP16_MAX, max=FP16_MAX))


@dataclass(frozen=True, eq=False)
class LayerStack:
    """Every decoder layer's predictions, stacked (``L = 1`` in eval mode: the ``eval_idx`` layer only).

    Attributes:
        logits: ``[L, B, Q, C]`` LQE-corrected class logits.
        boxes: ``[L, B, Q, 4]`` cxcywh normalized.
        corners: ``[L, B, Q, 4 * (reg_max + 1)]`` edge-distribution logits.
        ref_points: ``[L, B, Q, 4]`` the initial boxes every layer decodes from (cxcywh).
        pre_logits: ``[B, Q, C]`` the pre-decoder head's logits (first layer's score head).
        pre_boxes: ``[B, Q, 4]`` the pre-decoder head's boxes (the initial boxes, before detaching).
    """

    logits: torch.Tensor
    boxes: torch.Tensor
    corners: torch.Tensor
    ref_points: torch.Tensor
    pre_logits: torch.Tensor
    pre_boxes: torch.Tensor

    def split_queries(self, sizes: list[int]) -> tuple[LayerStack, LayerStack]:
        """Split along the query axis, e.g. into the (denoising, matching) parts of sizes ``[N_dn, Q]``."""
        parts = {f.name: torch.split(getattr(self, f.name), sizes, dim=-2) for f in fields(self)}
        return LayerStack(**{k: v[0] for k, v in parts.items()}), LayerStack(**{k: v[1] for k, v in parts.items()})

    def layer_heads(self, count: int) -> list[HeadOutputs]:
        """The first ``count`` layers as heads, each distilling the last layer's distributions (GO-LSD)."""
        return [
            HeadOutputs(
                self.logits[i],
                self.boxes[i],
                self.corners[i],
                self.ref_points[i],
                teacher_corners=self.corners[-1],
                teacher_logits=self.logits[-1],
            )
            for i in range(count)
        ]


class TransformerDecoder(nn.Module):
    """The stack of decoder layers and their LQE heads (``decoder.decoder`` in the checkpoint).

    ``up`` and ``reg_scale`` are the parent's frozen Parameters, registered here too so both
    checkpoint keys (``decoder.up`` and ``decoder.decoder.up``) exist, as in the official layout.
    """

    def __init__(
        self,
        make_layer,
        make_wide_layer,
        num_layers: int,
        num_head: int,
        reg_max: int,
        up: nn.Parameter,
        reg_scale: nn.Parameter,
        eval_idx: int,
        layer_scale: float,
    ) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.num_head = num_head
        self.reg_max = reg_max
        self.eval_idx = eval_idx
        self.layer_scale = layer_scale
        self.up = up
        self.reg_scale = reg_scale
        self.layers = nn.ModuleList(
            [make_layer() for _ in range(eval_idx + 1)] + [make_wide_layer() for _ in range(num_layers - eval_idx - 1)]
        )
        self.lqe_layers = nn.ModuleList(LQE(LQE_TOPK, LQE_HIDDEN, LQE_LAYERS, reg_max) for _ in range(num_layers))

    def split_value(
        self, memory: torch.Tensor, spatial_shapes: list[tuple[int, int]], width: int | None = None
    ) -> list[torch.Tensor]:
        """``memory`` [B, sum(H*W), D] -> per level ``[B * n_head, D / n_head, H, W]``."""
        if width is not None:  # wide layers read a channel-interpolated memory
            memory = F.interpolate(memory, size=width)
        batch, _, channels = memory.shape
        value = memory.reshape(batch, -1, self.num_head, channels // self.num_head).permute(0, 2, 3, 1)
        splits = value.split([h * w for h, w in spatial_shapes], dim=-1)
        return [
            v.reshape(batch * self.num_head, channels // self.num_head, h, w)
            for v, (h, w) in zip(splits, spatial_shapes)
        ]

    @torch.no_grad()
    def convert_to_deploy(self) -> None:
        """Keep only the layers and LQE heads that inference runs; precompute the FDR bin values."""
        self.register_buffer(
            "project", weighting_function(self.reg_max, self.up, self.reg_scale, precise=True), persistent=False
        )
        self.layers = self.layers[: self.eval_idx + 1]
        self.lqe_layers = nn.ModuleList([nn.Identity()] * self.eval_idx + [self.lqe_layers[self.eval_idx]])

    def forward(
        self,
        target: torch.Tensor,
        ref_points_unact: torch.Tensor,
        memory: torch.Tensor,
        spatial_shapes: list[tuple[int, int]],
        bbox_head: nn.ModuleList,
        score_head: nn.ModuleList,
        query_pos_head: nn.Module,
        pre_bbox_head: nn.Module,
        attn_mask: torch.Tensor | None = None,
    ) -> LayerStack:
        """Run the layers; in eval mode stop at ``eval_idx`` (and return that layer only)."""
        output = target
        output_detach = pred_corners_undetach = 0
        value = self.split_value(memory, spatial_shapes)
        project = getattr(self, "project", None)
        if project is None:
            project = weighting_function(self.reg_max, self.up, self.reg_scale)

        boxes, logits, corners, refs = [], [], [], []
        ref_points_detach = torch.sigmoid(ref_points_unact)
        for i, layer in enumerate(self.layers):
            ref_points_input = ref_points_detach.unsqueeze(2)
            query_pos_embed = query_pos_head(ref_points_detach).clamp(min=-QUERY_POS_CLAMP, max=QUERY_POS_CLAMP)
            if i >= self.eval_idx + 1 and self.layer_scale > 1:
                query_pos_embed = F.interpolate(query_pos_embed, scale_factor=self.layer_scale)
                value = self.split_value(memory, spatial_shapes, width=query_pos_embed.shape[-1])
                output = F.interpolate(output, size=query_pos_embed.shape[-1])
                output_detach = output.detach()

            output = layer(output, ref_points_input, value, spatial_shapes, attn_mask, query_pos_embed)

            if i == 0:
                # initial boxes: refine the selected anchors once, then every layer decodes from them
                pre_boxes = torch.sigmoid(pre_bbox_head(output) + inverse_sigmoid(ref_points_detach))
                pre_logits = score_head[0](output)
                ref_points_initial = pre_boxes.detach()

            pred_corners = bbox_head[i](output + output_detach) + pred_corners_undetach
            inter_boxes = distance2bbox(
                ref_points_initial, distribution_integral(pred_corners, project, self.reg_max), self.reg_scale
            )

            if self.training or i == self.eval_idx:
                scores = self.lqe_layers[i](score_head[i](output), pred_corners)
                logits.append(scores)
                boxes.append(inter_boxes)
                corners.append(pred_corners)
                refs.append(ref_points_initial)
                if not self.training:
                    break

            pred_corners_undetach = pred_corners
            ref_points_detach = inter_boxes.detach()
            output_detach = output.detach()

        return LayerStack(
            torch.stack(logits), torch.stack(boxes), torch.stack(corners), torch.stack(refs), pre_logits, pre_boxes
        )


class DFINETransformer(nn.Module):
    """D-FINE decoder head: encoder-memory query selection + FDR decoder + denoising.

    Input: encoder feature maps ``[B, feat_channels[i], H_i, W_i]``. Output: :class:`DFINEOutputs` in both
    modes, the final layer's ``logits [B, Q, C]`` and ``boxes [B, Q, 4]`` (cxcywh normalized) with its
    corners; in train mode (with ``aux_loss``) also the auxiliary, pre-decoder, encoder and denoising heads
    the criterion supervises.

    Set ``num_denoising = 0`` at run time to switch denoising off without changing the state_dict.
    """

    def __init__(
        self,
        num_classes: int = 80,
        hidden_dim: int = 256,
        num_queries: int = 300,
        feat_channels: tuple[int, ...] = (512, 1024, 2048),
        feat_strides: tuple[int, ...] = (8, 16, 32),
        num_levels: int = 3,
        num_points: int | list[int] = 4,
        nhead: int = 8,
        num_layers: int = 6,
        dim_feedforward: int = 1024,
        dropout: float = 0.0,
        activation: str = "relu",
        num_denoising: int = 100,
        label_noise_ratio: float = 0.5,
        box_noise_scale: float = 1.0,
        learn_query_content: bool = False,
        eval_spatial_size: tuple[int, int] | None = None,
        eval_idx: int = -1,
        eps: float = 1e-2,
        aux_loss: bool = True,
        cross_attn_method: str = "default",
        query_select_method: str = "default",
        reg_max: int = 32,
        reg_scale: float = 4.0,
        layer_scale: float = 1,
    ) -> None:
        super().__init__()
        if len(feat_channels) > num_levels:
            raise ValueError(f"feat_channels has {len(feat_channels)} entries but num_levels is {num_levels}")
        if len(feat_strides) != len(feat_channels):
            raise ValueError("feat_strides and feat_channels must have the same length")
        if not -num_layers <= eval_idx < num_layers:
            raise ValueError(f"eval_idx {eval_idx} is outside the {num_layers} decoder layers")
        feat_strides = list(feat_strides)
        for _ in range(num_levels - len(feat_strides)):
            feat_strides.append(feat_strides[-1] * 2)

        self.hidden_dim = hidden_dim
        self.nhead = nhead
        self.feat_strides = feat_strides
        self.num_levels = num_levels
        self.num_classes = num_classes
        self.num_queries = num_queries
        self.eps = eps
        self.num_layers = num_layers
        self.eval_spatial_size = list(eval_spatial_size) if eval_spatial_size else None
        self.aux_loss = aux_loss
        self.reg_max = reg_max
        self.query_select_method = query_select_method
        self.eval_idx = eval_idx if eval_idx >= 0 else num_layers + eval_idx

        # frozen FDR constants; reg_scale keeps the YAML's type (int64 for the official configs)
        self.up = nn.Parameter(torch.tensor([0.5]), requires_grad=False)
        self.reg_scale = nn.Parameter(torch.tensor([reg_scale]), requires_grad=False)
        self.input_proj = self._build_input_proj(feat_channels)

        def make_layer(scale: float | None = None):
            return lambda: TransformerDecoderLayer(
                hidden_dim,
                nhead,
                dim_feedforward,
                dropout,
                activation,
                num_levels,
                num_points,
                cross_attn_method=cross_attn_method,
                layer_scale=scale,
            )

        self.decoder = TransformerDecoder(
            make_layer(),
            make_layer(layer_scale),
            num_layers,
            nhead,
            reg_max,
            self.up,
            self.reg_scale,
            self.eval_idx,
            layer_scale,
        )

        self.num_denoising = num_denoising
        self.label_noise_ratio = label_noise_ratio
        self.box_noise_scale = box_noise_scale
        if num_denoising > 0:
            self.denoising_class_embed = nn.Embedding(num_classes + 1, hidden_dim, padding_idx=num_classes)

        self.learn_query_content = learn_query_content
        if learn_query_content:
            self.tgt_embed = nn.Embedding(num_queries, hidden_dim)
        self.query_pos_head = MLP(4, 2 * hidden_dim, hidden_dim, 2)
        self.enc_output = nn.Sequential(
            OrderedDict(proj=nn.Linear(hidden_dim, hidden_dim), norm=nn.LayerNorm(hidden_dim))
        )
        enc_classes = 1 if query_select_method == "agnostic" else num_classes
        self.enc_score_head = nn.Linear(hidden_dim, enc_classes)
        self.enc_bbox_head = MLP(hidden_dim, hidden_dim, 4, 3)

        scaled_dim = round(layer_scale * hidden_dim)
        num_narrow = self.eval_idx + 1
        num_wide = num_layers - num_narrow
        self.dec_score_head = nn.ModuleList(
            [nn.Linear(hidden_dim, num_classes) for _ in range(num_narrow)]
            + [nn.Linear(scaled_dim, num_classes) for _ in range(num_wide)]
        )
        self.pre_bbox_head = MLP(hidden_dim, hidden_dim, 4, 3)
        self.dec_bbox_head = nn.ModuleList(
            [MLP(hidden_dim, hidden_dim, 4 * (reg_max + 1), 3) for _ in range(num_narrow)]
            + [MLP(scaled_dim, scaled_dim, 4 * (reg_max + 1), 3) for _ in range(num_wide)]
        )

        if self.eval_spatial_size:
            anchors, valid_mask = generate_anchors(self._eval_spatial_shapes(), eps=eps)
            self.register_buffer("anchors", anchors)
            self.register_buffer("valid_mask", valid_mask)
        self._reset_parameters(feat_channels)

    def _eval_spatial_shapes(self) -> list[tuple[int, int]]:
        height, width = self.eval_spatial_size
        return [(int(height / s), int(width / s)) for s in self.feat_strides]

    def _build_input_proj(self, feat_channels: tuple[int, ...]) -> nn.ModuleList:
        projections = nn.ModuleList()
        for channels in feat_channels:
            if channels == self.hidden_dim:
                projections.append(nn.Identity())
            else:
                projections.append(
                    nn.Sequential(
                        OrderedDict(
                            conv=nn.Conv2d(channels, self.hidden_dim, 1, bias=False),
                            norm=nn.BatchNorm2d(self.hidden_dim),
                        )
                    )
                )
        channels = feat_channels[-1]
        for _ in range(self.num_levels - len(feat_channels)):  # extra stride-2 levels
            if channels == self.hidden_dim:
                projections.append(nn.Identity())
            else:
                projections.append(
                    nn.Sequential(
                        OrderedDict(
                            conv=nn.Conv2d(channels, self.hidden_dim, 3, 2, padding=1, bias=False),
                            norm=nn.BatchNorm2d(self.hidden_dim),
                        )
                    )
                )
                channels = self.hidden_dim
        return projections

    def _reset_parameters(self, feat_channels: tuple[int, ...]) -> None:
        bias = _bias_init_with_prob(0.01)
        nn.init.constant_(self.enc_score_head.bias, bias)
        nn.init.constant_(self.enc_bbox_head.layers[-1].weight, 0)
        nn.init.constant_(self.enc_bbox_head.layers[-1].bias, 0)
        nn.init.constant_(self.pre_bbox_head.layers[-1].weight, 0)
        nn.init.constant_(self.pre_bbox_head.layers[-1].bias, 0)
        for score_head, bbox_head in zip(self.dec_score_head, self.dec_bbox_head):
            nn.init.constant_(score_head.bias, bias)
            nn.init.constant_(bbox_head.layers[-1].weight, 0)
            nn.init.constant_(bbox_head.layers[-1].bias, 0)
        nn.init.xavier_uniform_(self.enc_output[0].weight)
        if self.learn_query_content:
            nn.init.xavier_uniform_(self.tgt_embed.weight)
        nn.init.xavier_uniform_(self.query_pos_head.layers[0].weight)
        nn.init.xavier_uniform_(self.query_pos_head.layers[1].weight)
        for proj, channels in zip(self.input_proj, feat_channels):
            if channels != self.hidden_dim:
                nn.init.xavier_uniform_(proj[0].weight)

    @torch.no_grad()
    def convert_to_deploy(self) -> None:
        """Drop the heads that inference never runs (all but ``eval_idx``)."""
        self.dec_score_head = nn.ModuleList([nn.Identity()] * self.eval_idx + [self.dec_score_head[self.eval_idx]])
        self.dec_bbox_head = nn.ModuleList(
            [head if i <= self.eval_idx else nn.Identity() for i, head in enumerate(self.dec_bbox_head)]
        )

    def _flatten_memory(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Project the feature maps and flatten them to ``[B, sum(H*W), D]``."""
        proj_feats = [self.input_proj[i](feat) for i, feat in enumerate(feats)]
        for i in range(len(feats), self.num_levels):
            source = feats[-1] if i == len(feats) else proj_feats[-1]
            proj_feats.append(self.input_proj[i](source))
        spatial_shapes = [(f.shape[2], f.shape[3]) for f in proj_feats]
        memory = torch.cat([f.flatten(2).permute(0, 2, 1) for f in proj_feats], dim=1)
        return memory, spatial_shapes

    def _anchors(
        self, spatial_shapes: list[tuple[int, int]], memory: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        use_buffers = (
            not self.training
            and self.eval_spatial_size is not None
            and list(spatial_shapes) == self._eval_spatial_shapes()
        )
        if use_buffers:
            return self.anchors, self.valid_mask
        return generate_anchors(spatial_shapes, eps=self.eps, device=memory.device)

    def _select_queries(
        self, memory: torch.Tensor, spatial_shapes: list[tuple[int, int]]
    ) -> tuple[torch.Tensor, torch.Tensor, HeadOutputs | None]:
        """Top-k encoder positions as decoder queries: content [B, Q, D], boxes as logits [B, Q, 4] and, in
        training, the encoder head's predictions for them."""
        if memory.shape[1] < self.num_queries:
            raise ValueError(
                f"the input gives {memory.shape[1]} encoder positions (feature maps {spatial_shapes}), "
                f"fewer than num_queries={self.num_queries}: use larger images or fewer queries"
            )
        anchors, valid_mask = self._anchors(spatial_shapes, memory)
        anchors = anchors.to(memory.dtype)
        memory = valid_mask.to(memory.dtype) * memory
        output_memory = self.enc_output(memory)
        enc_logits = self.enc_score_head(output_memory)
        anchors = anchors.expand(memory.shape[0], -1, -1)
        topk_memory, topk_logits, topk_anchors, _ = select_topk(
            output_memory, enc_logits, anchors, self.num_queries, self.query_select_method
        )
        topk_boxes_unact = self.enc_bbox_head(topk_memory) + topk_anchors
        encoder_head = HeadOutputs(topk_logits, torch.sigmoid(topk_boxes_unact)) if self.training else None
        if self.learn_query_content:
            content = self.tgt_embed.weight.unsqueeze(0).tile([memory.shape[0], 1, 1])
        else:
            content = topk_memory.detach()
        return content, topk_boxes_unact.detach(), encoder_head

    def forward(self, feats: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None) -> DFINEOutputs:
        memory, spatial_shapes = self._flatten_memory(feats)

        denoising: DenoisingGroup | None = None
        if self.training and self.num_denoising > 0:
            if targets is None:
                raise ValueError("training with denoising needs targets: call model(images, targets=...)")
            denoising = build_denoising_group(
                targets,
                self.num_classes,
                self.num_queries,
                self.denoising_class_embed,
                num_denoising=self.num_denoising,
                label_noise_ratio=self.label_noise_ratio,
                box_noise_scale=self.box_noise_scale,
            )

        content, ref_points_unact, encoder_head = self._select_queries(memory, spatial_shapes)
        attn_mask = None
        if denoising is None and self.training and self.num_denoising > 0:
            # a batch without boxes has no denoising queries; keep the embedding in the graph (adding 0)
            # so DistributedDataParallel sees the same parameters used on every rank
            content = content + 0.0 * self.denoising_class_embed.weight.sum()
        if denoising is not None:
            content = torch.cat([denoising.content, content], dim=1)
            ref_points_unact = torch.cat([denoising.ref_points_unact, ref_points_unact], dim=1)
            attn_mask = denoising.attn_mask

        stack = self.decoder(
            content,
            ref_points_unact,
            memory,
            spatial_shapes,
            self.dec_bbox_head,
            self.dec_score_head,
            self.query_pos_head,
            self.pre_bbox_head,
            attn_mask=attn_mask,
        )
        return self._outputs(stack, encoder_head, denoising)

    def _outputs(
        self, stack: LayerStack, encoder_head: HeadOutputs | None, denoising: DenoisingGroup | None
    ) -> DFINEOutputs:
        """The final layer's predictions and, in training with ``aux_loss``, every head the criterion supervises."""
        denoising_stack = None
        if denoising is not None:
            denoising_stack, stack = stack.split_queries(denoising.num_split)
        supervised = self.training and self.aux_loss
        denoising_outputs = None
        if supervised and denoising_stack is not None:
            denoising_outputs = DenoisingOutputs(
                layers=denoising_stack.layer_heads(denoising_stack.logits.shape[0]),
                pre=HeadOutputs(denoising_stack.pre_logits, denoising_stack.pre_boxes),
                group=denoising,
            )
        return DFINEOutputs(
            logits=stack.logits[-1],
            boxes=stack.boxes[-1],
            corners=stack.corners[-1],
            ref_points=stack.ref_points[-1],
            up=self.up,
            reg_scale=self.reg_scale,
            aux=stack.layer_heads(stack.logits.shape[0] - 1) if supervised else [],
            pre=HeadOutputs(stack.pre_logits, stack.pre_boxes) if supervised else None,
            encoder=[encoder_head] if supervised and encoder_head is not None else [],
            denoising=denoising_outputs,
            class_agnostic_encoder=self.query_select_method == "agnostic",
        )

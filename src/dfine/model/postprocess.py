"""Turn raw decoder outputs into detections: top-K over all (query, class) scores, boxes in pixels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..categories import COCO_CATEGORY_IDS
from ..ops.boxes import box_cxcywh_to_xyxy
from .outputs import HeadOutputs

__all__ = ["PostProcessor"]


class PostProcessor(nn.Module):
    """D-FINE post-processor.

    Args:
        num_classes: classes of the logits.
        num_top_queries: detections kept per image (K).
        use_focal_loss: sigmoid scores over all (query, class) pairs (D-FINE); otherwise softmax with a
            background class and the best class per query.
        remap_mscoco_category: map labels 0..79 to COCO category ids in :meth:`forward`.
    """

    def __init__(
        self,
        num_classes: int = 80,
        num_top_queries: int = 300,
        use_focal_loss: bool = True,
        remap_mscoco_category: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_top_queries = num_top_queries
        self.use_focal_loss = use_focal_loss
        self.remap_mscoco_category = remap_mscoco_category
        if remap_mscoco_category and num_classes != len(COCO_CATEGORY_IDS):
            raise ValueError(
                f"remap_mscoco_category needs the 80 COCO classes, but num_classes is {num_classes}; "
                "set remap_mscoco_category False for a custom dataset"
            )
        self.register_buffer("category_ids", torch.tensor(COCO_CATEGORY_IDS), persistent=False)

    def decode(
        self, outputs: HeadOutputs, orig_target_sizes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batched detections as tensors (the exported graph's outputs).

        Args:
            outputs: the model's outputs (any head): ``logits [B, Q, C]`` and ``boxes [B, Q, 4]`` (cxcywh,
                normalized).
            orig_target_sizes: ``[B, 2]`` as (width, height) in pixels.

        Returns:
            ``labels [B, K]`` (0..C-1), ``boxes [B, K, 4]`` xyxy pixels, ``scores [B, K]``, best first.
        """
        logits, boxes = outputs.logits, outputs.boxes
        boxes_xyxy = box_cxcywh_to_xyxy(boxes) * orig_target_sizes.repeat(1, 2).unsqueeze(1).to(boxes.dtype)
        num_top = min(self.num_top_queries, logits.shape[1] * logits.shape[2])
        if self.use_focal_loss:
            scores = torch.sigmoid(logits)
            scores, index = torch.topk(scores.flatten(1), num_top, dim=-1)
            labels = index % self.num_classes
            query = index // self.num_classes
        else:
            probs = F.softmax(logits, dim=-1)[:, :, :-1]
            scores, labels = probs.max(dim=-1)
            num_top = min(self.num_top_queries, scores.shape[1])
            scores, query = torch.topk(scores, num_top, dim=-1)
            labels = labels.gather(dim=1, index=query)
        boxes_xyxy = boxes_xyxy.gather(dim=1, index=query.unsqueeze(-1).expand(-1, -1, 4))
        return labels, boxes_xyxy, scores

    def forward(self, outputs: HeadOutputs, orig_target_sizes: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Per-image dicts with ``labels``, ``boxes`` (xyxy pixels) and ``scores``.

        ``orig_target_sizes`` is ``[B, 2]`` as (width, height). With ``remap_mscoco_category`` the
        labels are COCO category ids.
        """
        orig_target_sizes = torch.as_tensor(orig_target_sizes, device=outputs.boxes.device)
        if orig_target_sizes.ndim != 2 or orig_target_sizes.shape[-1] != 2:
            raise ValueError(f"orig_target_sizes must be [B, 2] (width, height), got {list(orig_target_sizes.shape)}")
        labels, boxes, scores = self.decode(outputs, orig_target_sizes)
        if self.remap_mscoco_category:
            labels = self.category_ids.to(labels.device)[labels]
        return [{"labels": lab, "boxes": box, "scores": sco} for lab, box, sco in zip(labels, boxes, scores)]

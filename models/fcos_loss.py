"""The three FCOS detection losses, normalised as mmdet's FCOSHead does (as GrokCV/BAFE-Net
``configs/detection/fcos_changer_seg/`` configures it).

* classification: sigmoid focal loss (torchvision) summed over ALL points / num_pos;
* box: -log IoU (non-legacy, IoU clamped at eps 1e-6) or 1 - GIoU on positives, weighted by
  the centerness target and divided by the sum of centerness targets;
* centerness: BCE-with-logits on positives / num_pos.
num_pos and the centerness sum are averaged over DDP workers (mmdet ``reduce_mean``) so
every worker normalises by the same number. With no positive at all the box and centerness
losses are 0 but stay connected to the graph (empty sums), as in mmdet.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from irstdlab.models.fcos_targets import centerness_target, distances_to_boxes


def reduce_mean(value: Tensor) -> Tensor:
    """Mean over DDP workers (identity without an initialised process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    value = value.clone()
    dist.all_reduce(value.div_(dist.get_world_size()), op=dist.ReduceOp.SUM)
    return value


def aligned_iou(pred: Tensor, target: Tensor, eps: float = 1e-6) -> Tensor:
    """IoU of row-aligned xyxy boxes, exact (non-legacy) geometry."""
    lt = torch.maximum(pred[:, :2], target[:, :2])
    rb = torch.minimum(pred[:, 2:], target[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    area_p = (pred[:, 2:] - pred[:, :2]).clamp(min=0).prod(dim=1)
    area_t = (target[:, 2:] - target[:, :2]).clamp(min=0).prod(dim=1)
    union = (area_p + area_t - inter).clamp(min=eps)
    return inter / union


def box_loss(pred: Tensor, target: Tensor, kind: str = "iou", eps: float = 1e-6) -> Tensor:
    """Per-box loss: "iou" = -log(IoU) (mmdet IoULoss mode 'log'), "giou" = 1 - GIoU."""
    if kind == "iou":
        return -aligned_iou(pred, target, eps).clamp(min=eps).log()
    if kind == "giou":
        return generalized_box_iou_loss(pred, target, reduction="none", eps=eps)
    raise ValueError(f"model.box_loss: unknown {kind!r}")


def fcos_losses(
    cls_logits: Tensor,
    distances: Tensor,
    centerness_logits: Tensor,
    point_xy: Tensor,
    positive: Tensor,
    target_distances: Tensor,
    *,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
    box_kind: str = "iou",
) -> dict[str, Tensor]:
    """Losses for a batch with flattened outputs.

    cls_logits [B, P] (one class), distances [B, P, 4] (exp'd, input pixels),
    centerness_logits [B, P], point_xy [P, 2], positive [B, P] bool,
    target_distances [B, P, 4] (l, t, r, b of the assigned box; ignored where not positive).
    """
    num_pos = reduce_mean(positive.sum().to(cls_logits.dtype)).clamp(min=1.0)
    loss_cls = sigmoid_focal_loss(
        cls_logits, positive.to(cls_logits.dtype), alpha=focal_alpha, gamma=focal_gamma, reduction="sum"
    ) / num_pos

    pos_pred = distances[positive]
    pos_ctr = centerness_logits[positive]
    pos_target = target_distances[positive]
    ctr_target = centerness_target(pos_target)
    # reduced on every worker, positives or not, so no DDP worker waits alone in all_reduce
    ctr_sum = reduce_mean(ctr_target.sum().detach()).clamp(min=1e-6)
    if pos_pred.shape[0] == 0:  # no positive in this batch: zero losses that still backprop
        return {"loss_cls": loss_cls, "loss_box": pos_pred.sum(), "loss_centerness": pos_ctr.sum()}
    pos_xy = point_xy.expand(positive.shape[0], -1, -1)[positive]
    per_box = box_loss(distances_to_boxes(pos_xy, pos_pred), distances_to_boxes(pos_xy, pos_target), box_kind)
    loss_box = (per_box * ctr_target).sum() / ctr_sum
    loss_ctr = F.binary_cross_entropy_with_logits(pos_ctr, ctr_target, reduction="sum") / num_pos
    return {"loss_cls": loss_cls, "loss_box": loss_box, "loss_centerness": loss_ctr}


__all__ = ["aligned_iou", "box_loss", "fcos_losses", "reduce_mean"]

"""YOLOv8-style loss: task-aligned assignment, IoU-aware BCE for classes, CIoU for boxes."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_iou, complete_box_iou_loss


@dataclass(frozen=True)
class LossWeights:
    box: float = 7.5
    cls: float = 0.5
    topk: int = 10
    alpha: float = 0.5  # weight of the class score in the alignment metric
    beta: float = 6.0   # weight of the IoU in the alignment metric
    iou_target: bool = False  # class target = IoU of each positive (VFL-style) instead of TOOD's normalised alignment


def _pairwise_iou(gt: Tensor, pred: Tensor) -> Tensor:
    """IoU of gt Tensor[B, G, 4] with pred Tensor[B, A, 4] -> Tensor[B, G, A]."""
    return torch.stack([box_iou(g, p) for g, p in zip(gt, pred)])


@torch.no_grad()
def assign(scores: Tensor, pred_boxes: Tensor, points: Tensor, targets: Tensor,
           w: LossWeights) -> tuple[Tensor, Tensor, Tensor]:
    """Task-aligned assignment (TOOD / YOLOv8).

    scores Tensor[B, A, C] probabilities, pred_boxes Tensor[B, A, 4], points Tensor[A, 2],
    targets Tensor[B, G, 5] (label, box; label -1 pads). Returns per anchor the assigned gt
    index Tensor[B, A] (long), a foreground mask Tensor[B, A] and the soft class target
    Tensor[B, A, C] (alignment normalised so each gt's best anchor gets its best IoU).
    """
    B, A, C = scores.shape
    G = targets.shape[1]
    labels = targets[..., 0].long()
    gt_boxes = targets[..., 1:]
    valid = labels >= 0                                                   # [B, G]
    inside = ((points[None, None] > gt_boxes[..., None, :2]) &
              (points[None, None] < gt_boxes[..., None, 2:])).all(-1)     # [B, G, A]
    inside &= valid[..., None]
    iou = _pairwise_iou(gt_boxes, pred_boxes).clamp(min=0)                # [B, G, A]
    cls_score = scores.gather(2, labels.clamp(min=0)[:, None, :].expand(B, A, G)).transpose(1, 2)
    align = cls_score.pow(w.alpha) * iou.pow(w.beta) * inside
    k = min(w.topk, A)
    top = align.topk(k, dim=-1).indices
    candidate = torch.zeros_like(align, dtype=torch.bool).scatter_(-1, top, True) & inside & (align > 0)
    # Anchors inside no gt alignment (e.g. all scores tiny early on) still fall back to the
    # k anchors nearest the centre, so every gt gets some positives from the first step.
    centre = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2
    dist = (points[None, None] - centre[..., None, :]).pow(2).sum(-1)
    near = dist.masked_fill(~inside, float("inf")).topk(min(3, A), dim=-1, largest=False).indices
    near_mask = torch.zeros_like(candidate).scatter_(-1, near, True) & inside
    no_pos = candidate.sum(-1, keepdim=True) == 0
    candidate = torch.where(no_pos, near_mask, candidate)
    # An anchor claimed by several gts goes to the one it overlaps most.
    multi = candidate.sum(1, keepdim=True) > 1
    best_gt = iou.masked_fill(~candidate, -1).argmax(1, keepdim=True)
    one_hot = torch.zeros_like(candidate).scatter_(1, best_gt, True)
    candidate = torch.where(multi, one_hot & candidate, candidate)
    fg = candidate.any(1)                                                 # [B, A]
    gt_index = candidate.float().argmax(1)                                # [B, A]
    align = align * candidate
    norm = align / align.amax(-1, keepdim=True).clamp(min=1e-9) * (iou * candidate).amax(-1, keepdim=True)
    quality = (iou * candidate).amax(1) if w.iou_target else norm.amax(1)  # [B, A]
    target_labels = labels.gather(1, gt_index).clamp(min=0)
    target = F.one_hot(target_labels, C).float() * (quality * fg)[..., None]
    return gt_index, fg, target


def _global_norm(norm: Tensor) -> tuple[Tensor, int]:
    """The normaliser of a DDP training step, averaged over ranks, and the world size.

    Each rank sees part of the global batch. Dividing by the mean of the ranks' target sums (not
    each rank's own) and scaling by the world size makes DDP's averaged gradient the gradient of
    the global batch's loss. Evaluation (no grad; rank 0 alone) keeps its own normaliser.
    """
    if torch.is_grad_enabled() and dist.is_available() and dist.is_initialized():
        world = dist.get_world_size()
        norm = norm.detach().clone()
        dist.all_reduce(norm)
        return (norm / world).clamp(min=1.0), world
    return norm.clamp(min=1.0), 1


def detection_loss(out: dict[str, Tensor], targets: Tensor, w: LossWeights = LossWeights()
                   ) -> tuple[Tensor, dict[str, float]]:
    """Loss to backpropagate (scaled by batch size) and the per-image loss and its parts as floats."""
    cls_logits, pred_boxes = out["cls"], out["boxes"]
    B = cls_logits.shape[0]
    gt_index, fg, target = assign(cls_logits.detach().sigmoid(), pred_boxes.detach(), out["points"], targets, w)
    norm, world = _global_norm(target.sum())
    cls_loss = F.binary_cross_entropy_with_logits(cls_logits, target, reduction="sum") / norm
    if fg.any():
        gt_boxes = targets[..., 1:].gather(1, gt_index[..., None].expand(-1, -1, 4))
        weight = target.sum(-1)[fg]
        # CIoU of boxes in stride units, so big and small objects weigh alike.
        scale = out["strides"].expand(B, -1, -1)[fg]
        box_loss = (complete_box_iou_loss(pred_boxes[fg] / scale, gt_boxes[fg] / scale, reduction="none")
                    * weight).sum() / norm
    else:
        box_loss = pred_boxes.sum() * 0.0
    per_image = w.box * box_loss + w.cls * cls_loss
    # The gradient is scaled by the (global) batch size as in YOLOv8; the reported figures are per image.
    return per_image * B * world, {"loss": float(per_image.detach()), "box": float(box_loss.detach()),
                           "cls": float(cls_loss.detach())}

"""YOLOv8-style loss: task-aligned assignment, IoU-aware BCE for classes, CIoU for boxes.

Options: label smoothing of the foreground class targets and a quality focal loss in place of the
class BCE (both off by default, leaving the loss exactly as without them).
"""
from __future__ import annotations

from dataclasses import dataclass

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_iou

from . import collectives


@dataclass(frozen=True)
class LossWeights:
    box: float = 7.5
    cls: float = 0.5
    topk: int = 10
    alpha: float = 0.5  # weight of the class score in the alignment metric
    beta: float = 6.0   # weight of the IoU in the alignment metric
    iou_target: bool = False  # class target = IoU of each positive (VFL-style) instead of TOOD's normalised alignment
    label_smoothing: float = 0.0  # eps: foreground anchors' class targets t -> t * (1 - eps) + eps / 2
    focal: bool = False       # quality focal loss instead of BCE for the classes
    focal_gamma: float = 1.5
    focal_alpha: float = 0.25  # < 0: no alpha balancing (torchvision's convention)

    @classmethod
    def from_train_params(cls, t) -> "LossWeights":
        """The loss settings of params.yaml's train section (one place, for training and its checks)."""
        return cls(box=t.box_gain, cls=t.cls_gain, iou_target=t.iou_target, label_smoothing=t.label_smoothing,
                   focal=t.focal_loss, focal_gamma=t.focal_gamma, focal_alpha=t.focal_alpha)


def smooth_targets(target: Tensor, fg: Tensor, eps: float) -> Tensor:
    """Label smoothing of the class targets Tensor[B, A, C] of foreground anchors fg Tensor[B, A].

    A foreground row's entries t (the quality score q on the true class, 0 elsewhere) become
    t * (1 - eps) + eps / 2: for hard 0/1 targets exactly YOLOv5's smooth_BCE (1 - eps/2, eps/2).
    This affine form, not q * (1 - eps/2), keeps a poorly aligned positive's target above its
    row's negatives (q * (1 - eps/2) < eps/2 once q is small). Background anchors stay at 0:
    in YOLOv5 the class BCE only ever saw matched anchors and background was the (unsmoothed)
    objectness loss, which the class score plays here; smoothing it would put a floor of eps/2
    under every score of every anchor.
    """
    if eps == 0:
        return target
    return torch.where(fg[..., None], target * (1 - eps) + eps / 2, target)


def quality_focal_loss(logits: Tensor, target: Tensor, gamma: float, alpha: float) -> Tensor:
    """Element-wise focal loss for soft targets in [0, 1] (GFL's quality focal loss, alpha-balanced).

    BCE(logits, target) * |target - p| ** gamma * alpha_t, alpha_t = alpha * t + (1 - alpha) * (1 - t)
    (no alpha_t when alpha < 0). For 0/1 targets this is exactly torchvision's sigmoid_focal_loss;
    torchvision's modulating factor (1 - p_t) ** gamma, with p_t = p * t + (1 - p) * (1 - t), does not
    vanish at p = t for a soft t, so its minimum moves away from the quality target, toward 0 below
    t = 0.5 and toward 1 above (t 0.3: p 0.15 at gamma 1.5). |t - p| ** gamma is 0 there, and alpha_t does not depend on p, so the minimum
    stays at p = t. gamma 0 and alpha < 0 give plain BCE.
    """
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    # The clamp keeps the gradient finite where p == t exactly (e.g. a saturated score of 0 on a
    # 0 target), where pow's derivative at 0 would be 0 * inf for gamma <= 1.
    loss = bce * (target - logits.sigmoid()).abs().clamp(min=1e-12).pow(gamma)
    if alpha >= 0:
        loss = loss * (alpha * target + (1 - alpha) * (1 - target))
    return loss


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
    # A scatter, not F.one_hot, which checks its labels' range with two reads to the host on the CPU.
    one_hot = torch.zeros(B, A, C, device=scores.device).scatter_(-1, target_labels[..., None], 1.0)
    target = one_hot * (quality * fg)[..., None]
    return gt_index, fg, target


def complete_iou_loss(pred: Tensor, gt: Tensor, eps: float = 1e-7) -> Tensor:
    """CIoU loss of pred Tensor[..., 4] against gt Tensor[..., 4] (xyxy) -> Tensor[...].

    torchvision's complete_box_iou_loss, term for term, except that the intersection is a product
    of clamped extents instead of a boolean-mask assignment: the same values, without the host
    synchronisations mask indexing costs on CUDA (tests/test_loss.py compares the two).
    """
    x1, y1, x2, y2 = pred.unbind(dim=-1)
    x1g, y1g, x2g, y2g = gt.unbind(dim=-1)
    inter = (torch.min(x2, x2g) - torch.max(x1, x1g)).clamp(min=0) * (torch.min(y2, y2g) - torch.max(y1, y1g)).clamp(min=0)
    union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - inter
    iou = inter / (union + eps)
    diagonal = ((torch.max(x2, x2g) - torch.min(x1, x1g)) ** 2) + ((torch.max(y2, y2g) - torch.min(y1, y1g)) ** 2) + eps
    centres = (((x2 + x1) / 2 - (x1g + x2g) / 2) ** 2) + (((y2 + y1) / 2 - (y1g + y2g) / 2) ** 2)
    diou_loss = 1 - iou + centres / diagonal
    v = (4 / (math.pi ** 2)) * torch.pow(torch.atan((x2g - x1g) / (y2g - y1g)) - torch.atan((x2 - x1) / (y2 - y1)), 2)
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return diou_loss + alpha * v


def _global_norm(norm: Tensor) -> tuple[Tensor, int]:
    """The normaliser of a DDP training step, averaged over ranks, and the world size.

    Each rank sees part of the global batch. Dividing by the mean of the ranks' target sums (not
    each rank's own) and scaling by the world size makes DDP's averaged gradient the gradient of
    the global batch's loss. Evaluation (no grad; each rank its own share) keeps its own normaliser.
    """
    world = collectives.world_size()
    if torch.is_grad_enabled() and world > 1:
        norm = collectives.all_reduce(norm.detach().clone())
        return (norm / world).clamp(min=1.0), world
    return norm.clamp(min=1.0), 1


def detection_loss(out: dict[str, Tensor], targets: Tensor, w: LossWeights = LossWeights()
                   ) -> tuple[Tensor, dict[str, Tensor]]:
    """Loss to backpropagate (scaled by batch size) and the per-image loss and its parts
    (0-dim detached tensors on the loss's device: reading them is the caller's choice).

    Nothing here waits for the device: positives are weighted by their (zero for background)
    targets instead of being selected with a boolean mask.
    """
    cls_logits, pred_boxes = out["cls"], out["boxes"]
    B = cls_logits.shape[0]
    gt_index, fg, target = assign(cls_logits.detach().sigmoid(), pred_boxes.detach(), out["points"], targets, w)
    norm, world = _global_norm(target.sum())
    # Smoothing and the focal form change what the scores are fitted to, not the normaliser (the
    # sum of the unsmoothed quality targets) nor the box weights below.
    cls_target = smooth_targets(target, fg, w.label_smoothing)
    if w.focal:
        cls_loss = quality_focal_loss(cls_logits, cls_target, w.focal_gamma, w.focal_alpha).sum() / norm
    else:
        cls_loss = F.binary_cross_entropy_with_logits(cls_logits, cls_target, reduction="sum") / norm
    gt_boxes = targets[..., 1:].gather(1, gt_index[..., None].expand(-1, -1, 4))
    # Background anchors are compared with their own (detached) prediction, a loss of 0 with
    # finite gradients, and weigh 0: a padding box (-1, -1, -1, -1) would give 0/0 in CIoU.
    gt_boxes = torch.where(fg[..., None], gt_boxes, pred_boxes.detach())
    weight = target.sum(-1)  # [B, A], 0 on background
    # CIoU of boxes in stride units, so big and small objects weigh alike.
    scale = out["strides"]
    box_loss = (complete_iou_loss(pred_boxes / scale, gt_boxes / scale) * weight).sum() / norm
    per_image = w.box * box_loss + w.cls * cls_loss
    # The gradient is scaled by the (global) batch size as in YOLOv8; the reported figures are per image.
    return per_image * B * world, {"loss": per_image.detach(), "box": box_loss.detach(), "cls": cls_loss.detach()}

"""Box utilities in the style of torchvision.ops.boxes: pure functions, xyxy absolute pixels."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import batched_nms

__all__ = ["Letterbox", "letterbox_params", "to_letterbox", "from_letterbox", "clip_boxes",
           "box_area", "distances_to_boxes", "multiclass_nms"]


@dataclass(frozen=True)
class Letterbox:
    """How an image of (width, height) was resized and padded into a square of `size`.

    `scale_x`/`scale_y` are the exact ratios of the resized to the original size (they differ
    by rounding only), so mapping boxes back is the exact inverse of mapping them in.
    """

    width: int
    height: int
    size: int
    new_width: int
    new_height: int
    pad_x: int
    pad_y: int

    @property
    def scale_x(self) -> float:
        return self.new_width / self.width

    @property
    def scale_y(self) -> float:
        return self.new_height / self.height


def letterbox_params(width: int, height: int, size: int, scale: float = 1.0,
                     shift: tuple[float, float] = (0.5, 0.5)) -> Letterbox:
    """Fit (width, height) into a `size` square keeping the aspect ratio.

    `scale` multiplies the fitted size (augmentation may zoom in or out) and `shift` in [0, 1]
    places the image inside the free space (0.5, 0.5 centres it as at inference).
    """
    r = min(size / width, size / height) * scale
    new_w, new_h = max(1, round(width * r)), max(1, round(height * r))
    pad_x = int((size - new_w) * shift[0]) if new_w <= size else -int((new_w - size) * shift[0])
    pad_y = int((size - new_h) * shift[1]) if new_h <= size else -int((new_h - size) * shift[1])
    return Letterbox(width, height, size, new_w, new_h, pad_x, pad_y)


def to_letterbox(boxes: Tensor, lb: Letterbox) -> Tensor:
    """Map boxes Tensor[N, 4] from original to letterboxed pixels."""
    scale = boxes.new_tensor([lb.scale_x, lb.scale_y, lb.scale_x, lb.scale_y])
    pad = boxes.new_tensor([lb.pad_x, lb.pad_y, lb.pad_x, lb.pad_y])
    return boxes * scale + pad


def from_letterbox(boxes: Tensor, lb: Letterbox) -> Tensor:
    """Map boxes Tensor[N, 4] from letterboxed back to original pixels (inverse of to_letterbox)."""
    scale = boxes.new_tensor([lb.scale_x, lb.scale_y, lb.scale_x, lb.scale_y])
    pad = boxes.new_tensor([lb.pad_x, lb.pad_y, lb.pad_x, lb.pad_y])
    return (boxes - pad) / scale


def clip_boxes(boxes: Tensor, width: float, height: float) -> Tensor:
    """Clip boxes Tensor[N, 4] to [0, width] x [0, height]."""
    x = boxes[..., 0::2].clamp(0, width)
    y = boxes[..., 1::2].clamp(0, height)
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    """Area of boxes Tensor[..., 4] (0 for degenerate boxes)."""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def distances_to_boxes(points: Tensor, ltrb: Tensor) -> Tensor:
    """Boxes Tensor[..., A, 4] from anchor points Tensor[A, 2] and distances Tensor[..., A, 4]."""
    return torch.cat([points - ltrb[..., :2], points + ltrb[..., 2:]], dim=-1)


def multiclass_nms(boxes: Tensor, scores: Tensor, conf: float, iou: float, max_det: int,
                   pre_nms: int = 1000) -> tuple[Tensor, Tensor, Tensor]:
    """Per-class NMS for one image.

    boxes Tensor[A, 4], scores Tensor[A, C] (probabilities). A box may be kept for several
    classes, as in YOLOv8 and the VOC evaluation convention. Returns boxes Tensor[K, 4],
    scores Tensor[K], labels Tensor[K] sorted by descending score, K <= max_det.
    """
    anchor_idx, labels = torch.nonzero(scores >= conf, as_tuple=True)
    cand = scores[anchor_idx, labels]
    if cand.numel() > pre_nms:
        cand, top = cand.topk(pre_nms)
        anchor_idx, labels = anchor_idx[top], labels[top]
    cand_boxes = boxes[anchor_idx]
    keep = batched_nms(cand_boxes.float(), cand.float(), labels, iou)[:max_det]
    return cand_boxes[keep], cand[keep], labels[keep]

"""Detections from the network's output: per-class NMS, boxes back to each image's pixels, and
the ones a report or a file shows."""
from __future__ import annotations

import numpy as np
from torch import Tensor

from ..boxes import Letterbox, clip_boxes, from_letterbox, multiclass_nms


def decode(out: dict[str, Tensor], conf: float, iou: float, max_det: int) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Per image of a batch: (boxes Tensor[K, 4] in input pixels, scores Tensor[K], labels Tensor[K])."""
    scores = out["cls"].float().sigmoid()
    return [multiclass_nms(b, s, conf, iou, max_det) for b, s in zip(out["boxes"].float(), scores)]


def detections_per_image(out: dict[str, Tensor], letterboxes: list[Letterbox], conf: float, iou: float,
                         max_det: int) -> list[dict[str, np.ndarray]]:
    """Per-class NMS, then boxes back to each image's own pixels (clipped to the image).

    One dict of boxes [K, 4] (float64), scores [K] and labels [K] per letterbox, in batch order.
    """
    dets = []
    for (boxes, scores, labels), lb in zip(decode(out, conf, iou, max_det), letterboxes):
        boxes = clip_boxes(from_letterbox(boxes.cpu().double(), lb), lb.width, lb.height)
        dets.append({"boxes": boxes.numpy(), "scores": scores.cpu().double().numpy(), "labels": labels.cpu().numpy()})
    return dets


def sample_indices(n: int, k: int) -> list[int]:
    """k indices spread evenly over n items (deterministic, so reruns draw the same images)."""
    if n == 0 or k <= 0:
        return []
    return sorted(set(np.linspace(0, n - 1, min(k, n)).round().astype(int).tolist()))


def above(det: dict, conf: float) -> dict:
    """The detections of one image at or above `conf`."""
    keep = det["scores"] >= conf
    return {k: v[keep] for k, v in det.items()}

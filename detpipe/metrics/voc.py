"""PASCAL VOC average precision, as the VOC devkit and the Cartucho/mAP tool compute it.

Conventions (the ones users compare against):
- IoU with the +1 pixel convention: widths are x2 - x1 + 1, boxes that touch overlap by one.
- Per class, detections are taken by descending score; ties keep image order, then input order.
- Each detection looks at the ground truth with the highest IoU in its image (first one on ties,
  difficult and already-matched ones included). IoU >= min_overlap: true positive if that object
  is neither difficult nor taken, false positive (duplicate) if it is taken, and neither if it is
  difficult. Otherwise a false positive.
- Difficult objects do not count in the number of positives. A class whose objects are all
  difficult (or that has none) has no AP (NaN) and is not averaged; a class with objects and no
  detection has AP 0.
- AP is the area under the all-point interpolated precision envelope; VOC2007 11-point on request.
Detections matched to difficult objects are dropped from the curve: they add a point equal to the
previous one, so the AP is unchanged, and nothing is ever divided by zero.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._pairs import first_per_segment, group_pairs
from ._sort import lexsort
from .flat import EvalData, from_lists


@dataclass(frozen=True)
class VocResult:
    """Per-class VOC AP and the curves behind it (index = class id).

    `ap` is NaN for classes without (non-difficult) ground truth; `map` averages the others (0.0
    when there are none). `scores[c]`, `tp[c]`, `precision[c]`, `recall[c]` follow the class's
    detections by descending score, without those matched to difficult objects.
    """

    ap: np.ndarray
    map: float
    n_gt: np.ndarray
    n_det: np.ndarray
    scores: list[np.ndarray]
    tp: list[np.ndarray]
    precision: list[np.ndarray]
    recall: list[np.ndarray]
    min_overlap: float
    use_07: bool


def voc_iou_plus1(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise IoU of paired boxes with the +1 pixel convention; -1 where they do not overlap.

    The operation order follows the reference tool's so results agree to the last bit.
    """
    iw = np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]) + 1
    ih = np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]) + 1
    inter = iw * ih
    ua = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1) \
        + (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1) - inter
    ok = (iw > 0) & (ih > 0)
    return np.where(ok, inter / np.where(ok, ua, 1.0), -1.0)


def best_gt(d_box, d_key, g_box, g_key_sorted) -> tuple[np.ndarray, np.ndarray]:
    """For each detection: highest IoU with a ground truth of the same key (-1 if none overlaps)
    and that ground truth's index in the sorted order (first on ties, -1 if none)."""
    ovmax = np.full(len(d_key), -1.0)
    arg = np.full(len(d_key), -1, dtype=np.int64)
    for det, gt in group_pairs(d_key, g_key_sorted):
        iou = voc_iou_plus1(d_box[det], g_box[gt])
        starts = np.flatnonzero(np.r_[True, det[1:] != det[:-1]])
        seg_max = np.maximum.reduceat(iou, starts)
        owner = det[starts]
        at_max = iou == np.repeat(seg_max, np.diff(np.r_[starts, len(det)]))
        first = first_per_segment(at_max & (iou > -1), det)
        ovmax[owner] = seg_max
        arg[det[first]] = gt[first]
    return ovmax, arg


def ap_all_point(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the monotone precision envelope (VOC2010+ / Cartucho `voc_ap`)."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))


def ap_11_point(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2007 11-point AP: mean of the best precision at recall >= 0, 0.1, ..., 1."""
    ap = 0.0
    for t in np.arange(0.0, 1.1, 0.1):  # the devkit's exact thresholds (0.30000000000000004, ...)
        above = recall >= t
        ap += (float(np.max(precision[above])) if above.any() else 0.0) / 11.0
    return ap


def voc_matches(data: EvalData, num_classes: int, min_overlap: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The matching of the module docstring, in the order the AP reads detections.

    Returns (d_order [K]: detection rows by class, then descending score; and in that order:
    tp [K] bool, matched a difficult object [K] bool, the matched ground-truth row [K], -1 if none).
    """
    g_key = data.g_img * num_classes + data.g_lab
    g_order = np.argsort(g_key, kind="stable")
    g_box, g_key, g_diff = data.g_box[g_order], g_key[g_order], data.g_diff[g_order]
    # best objects in input (image-major) order: boxes are read in place, only results move
    ovmax, arg = best_gt(data.d_box, data.d_img * num_classes + data.d_lab, g_box, g_key)
    # class, then descending score; lexsort is stable so ties keep image then input order
    d_order = lexsort((-data.d_score, data.d_lab))
    ovmax, arg = ovmax[d_order], arg[d_order]
    hit = ovmax >= min_overlap
    difficult_hit = hit & (g_diff[np.maximum(arg, 0)] if len(g_diff) else False)  # no objects: no hit
    claim = hit & ~difficult_hit
    tp = np.zeros(len(d_order), dtype=bool)
    claim_idx = np.flatnonzero(claim)
    first = np.full(len(g_key), len(d_order))  # first claimant in score order wins
    np.minimum.at(first, arg[claim_idx], claim_idx)
    tp[first[first < len(d_order)]] = True
    matched = np.where(arg >= 0, g_order[np.maximum(arg, 0)], -1) if len(g_order) else arg
    return d_order, tp, difficult_hit, matched


def match_image(gt: dict, det: dict, min_overlap: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """One image's detections against its objects, exactly as the VOC AP counts them.

    gt: {"boxes" [M, 4], "labels" [M], "difficult" [M] (optional)}; det: {"boxes" [K, 4],
    "labels" [K], "scores" [K]}. Returns (true positive [K] bool, object found [M] bool), in
    their input orders; a detection on a difficult object is neither true nor found.
    """
    data = from_lists([gt], [det])
    num_classes = int(max(data.g_lab.max(initial=-1), data.d_lab.max(initial=-1))) + 1
    d_order, tp, _, arg = voc_matches(data, num_classes, min_overlap)
    is_tp = np.zeros(len(d_order), dtype=bool)
    is_tp[d_order] = tp
    found = np.zeros(len(data.g_lab), dtype=bool)
    found[arg[tp]] = True
    return is_tp, found


def voc_map(gts: list[dict], dets: list[dict], num_classes: int, min_overlap: float = 0.5,
            use_07: bool = False) -> VocResult:
    """VOC AP per class and mAP. `gts[i]`/`dets[i]` describe image i (see module docstring).

    gts: {"boxes" [M,4] xyxy, "labels" [M], "difficult" [M] (optional)};
    dets: {"boxes" [K,4] xyxy, "labels" [K], "scores" [K]}.
    """
    return voc_map_flat(from_lists(gts, dets), num_classes, min_overlap, use_07)


def voc_map_flat(data: EvalData, num_classes: int, min_overlap: float = 0.5,
                 use_07: bool = False) -> VocResult:
    """`voc_map` on flat arrays (image-major rows, see `flat.EvalData`)."""
    data.check(num_classes)
    d_order, tp, difficult_hit, _ = voc_matches(data, num_classes, min_overlap)
    d_lab, d_score, g_lab, g_diff = data.d_lab[d_order], data.d_score[d_order], data.g_lab, data.g_diff
    keep = ~difficult_hit

    n_gt = np.bincount(g_lab[~g_diff], minlength=num_classes)[:num_classes]
    n_det = np.bincount(d_lab, minlength=num_classes)[:num_classes]
    bounds = np.searchsorted(d_lab, np.arange(num_classes + 1))
    ap = np.full(num_classes, np.nan)
    scores, tps, precs, recs = [], [], [], []
    for c in range(num_classes):
        sl = slice(bounds[c], bounds[c + 1])
        k = keep[sl]
        t = tp[sl][k]
        ctp = np.cumsum(t)
        prec = ctp / np.arange(1, len(t) + 1)
        rec = ctp / n_gt[c] if n_gt[c] else np.zeros(len(t))
        scores.append(d_score[sl][k])
        tps.append(t)
        precs.append(prec)
        recs.append(rec)
        if n_gt[c]:
            ap[c] = ap_11_point(rec, prec) if use_07 else ap_all_point(rec, prec)
    valid = ~np.isnan(ap)
    mean = float(np.mean(ap[valid])) if valid.any() else 0.0
    return VocResult(ap, mean, n_gt, n_det, scores, tps, precs, recs, float(min_overlap), bool(use_07))

"""Confusion matrix of detections against ground truth with a background row and column.

Rows are the true class, columns the predicted class; the last row/column is background:
M[bg, c] counts detections of class c that match no object (false positives), M[g, bg] objects
of class g that no detection matches (misses). Only detections with score >= confidence count.
Per image, pairs with IoU >= iou (VOC +1 pixel convention) are matched one-to-one greedily by
descending IoU, whatever their classes, so M[g, c] with g != c is a class confusion; ties go to
the earlier object, then the earlier detection. Difficult objects are left out as in VOC: never
missed, and an otherwise unmatched detection overlapping one (IoU >= iou) is not counted as a
false positive.

Greedy matching is computed for all images at once: a pair that is the first (in greedy order)
of the remaining pairs of both its object and its detection would be taken by the greedy loop,
so each round takes all such pairs and drops the pairs they block; this gives the greedy loop's
result exactly (tests compare it with the loop).
"""
from __future__ import annotations

import numpy as np

from ._pairs import group_pairs
from ._sort import lexsort
from .flat import EvalData, from_lists
from .voc import voc_iou_plus1


def confusion_matrix(gts: list[dict], dets: list[dict], num_classes: int, confidence: float,
                     iou: float = 0.5) -> np.ndarray:
    """Integer matrix [C+1, C+1]: rows true class (+ background), columns predicted (+ background)."""
    return confusion_matrix_flat(from_lists(gts, dets), num_classes, confidence, iou)


def _overlapping(d_img, d_box, g_img, g_box, iou):
    """(det, gt, IoU) of the same image with IoU >= iou (>= 0: boxes that do not overlap have
    IoU -1), det-major, gts in input order."""
    dd, gg, ov = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0)]
    for det, gt in group_pairs(d_img, g_img):
        # most pairs of an image do not even overlap in x: drop them before the full IoU
        near = np.minimum(d_box[det, 2], g_box[gt, 2]) - np.maximum(d_box[det, 0], g_box[gt, 0]) + 1 > 0
        det, gt = det[near], gt[near]
        o = voc_iou_plus1(g_box[gt], d_box[det])
        keep = o >= iou
        dd.append(det[keep]); gg.append(gt[keep]); ov.append(o[keep])
    return np.concatenate(dd), np.concatenate(gg), np.concatenate(ov)


def _greedy(p_det, p_gt, rank, n_det, n_gt) -> np.ndarray:
    """Pairs taken by greedy one-to-one matching in ascending `rank` (distinct ranks)."""
    alive = np.arange(len(rank))
    taken = []
    while len(alive):
        r, d, g = rank[alive], p_det[alive], p_gt[alive]
        best_d = np.full(n_det, len(rank), np.int64)
        best_g = np.full(n_gt, len(rank), np.int64)
        np.minimum.at(best_d, d, r)
        np.minimum.at(best_g, g, r)
        win = (best_d[d] == r) & (best_g[g] == r)
        taken.append(alive[win])
        used_d = np.zeros(n_det, bool)
        used_g = np.zeros(n_gt, bool)
        used_d[d[win]] = True
        used_g[g[win]] = True
        alive = alive[~(used_d[d] | used_g[g])]
    return np.concatenate(taken) if taken else np.zeros(0, np.int64)


def confusion_matrix_flat(data: EvalData, num_classes: int, confidence: float,
                          iou: float = 0.5) -> np.ndarray:
    """`confusion_matrix` on flat arrays (see `flat.EvalData`)."""
    data.check(num_classes)
    bg = num_classes
    m = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    kept = np.flatnonzero(data.d_score >= confidence)
    d_img, d_box, d_lab = data.d_img[kept], data.d_box[kept], data.d_lab[kept]
    real, hard = np.flatnonzero(~data.g_diff), np.flatnonzero(data.g_diff)
    g_img, g_box, g_lab = data.g_img[real], data.g_box[real], data.g_lab[real]

    p_det, p_gt, ov = _overlapping(d_img, d_box, g_img, g_box, iou)
    # the loop's order: image, descending IoU, then object, then detection
    order = lexsort((p_det, p_gt, -ov, d_img[p_det]))
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    won = _greedy(p_det, p_gt, rank, len(d_lab), len(g_lab))
    np.add.at(m, (g_lab[p_gt[won]], d_lab[p_det[won]]), 1)
    g_used = np.zeros(len(g_lab), bool)
    g_used[p_gt[won]] = True
    np.add.at(m[:, bg], g_lab[~g_used], 1)

    free = np.ones(len(d_lab), bool)
    free[p_det[won]] = False
    f = np.flatnonzero(free)
    on_hard, _, _ = _overlapping(d_img[f], d_box[f], data.g_img[hard], data.g_box[hard], iou)
    free[f[on_hard]] = False
    np.add.at(m[bg], d_lab[free], 1)
    return m

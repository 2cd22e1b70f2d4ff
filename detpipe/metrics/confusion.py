"""Confusion matrix of detections against ground truth with a background row and column.

Rows are the true class, columns the predicted class; the last row/column is background:
M[bg, c] counts detections of class c that match no object (false positives), M[g, bg] objects
of class g that no detection matches (misses). Only detections with score >= confidence count.
Per image, pairs with IoU >= iou (VOC +1 pixel convention) are matched one-to-one greedily by
descending IoU, whatever their classes, so M[g, c] with g != c is a class confusion. Difficult
objects are left out as in VOC: never missed, and an otherwise unmatched detection overlapping
one (IoU >= iou) is not counted as a false positive.
"""
from __future__ import annotations

import numpy as np

from .voc import check_inputs, voc_iou_plus1


def confusion_matrix(gts: list[dict], dets: list[dict], num_classes: int, confidence: float,
                     iou: float = 0.5) -> np.ndarray:
    """Integer matrix [C+1, C+1]: rows true class (+ background), columns predicted (+ background)."""
    check_inputs(gts, dets, num_classes)
    bg = num_classes
    m = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    for g, d in zip(gts, dets):
        g_box = np.asarray(g["boxes"], np.float64).reshape(-1, 4)
        g_lab = np.asarray(g["labels"], np.int64).reshape(-1)
        diff = np.asarray(g.get("difficult", np.zeros(len(g_lab), bool)), bool).reshape(-1)
        hard, g_box, g_lab = g_box[diff], g_box[~diff], g_lab[~diff]
        keep = np.asarray(d["scores"], np.float64).reshape(-1) >= confidence
        d_box = np.asarray(d["boxes"], np.float64).reshape(-1, 4)[keep]
        d_lab = np.asarray(d["labels"], np.int64).reshape(-1)[keep]
        gi, di = np.meshgrid(np.arange(len(g_lab)), np.arange(len(d_lab)), indexing="ij")
        gi, di = gi.ravel(), di.ravel()
        ov = voc_iou_plus1(g_box[gi], d_box[di]) if len(gi) else np.zeros(0)
        cand = np.flatnonzero(ov >= iou)
        cand = cand[np.argsort(-ov[cand], kind="stable")]
        g_used = np.zeros(len(g_lab), bool)
        d_used = np.zeros(len(d_lab), bool)
        for p in cand:  # few pairs per image: a plain loop is clearest
            a, b = gi[p], di[p]
            if not (g_used[a] or d_used[b]):
                g_used[a] = d_used[b] = True
                m[g_lab[a], d_lab[b]] += 1
        np.add.at(m, (g_lab[~g_used], bg), 1)
        free = np.flatnonzero(~d_used)
        if len(hard) and len(free):
            fi, hi = np.meshgrid(free, np.arange(len(hard)), indexing="ij")
            on_hard = (voc_iou_plus1(d_box[fi.ravel()], hard[hi.ravel()]) >= iou).reshape(fi.shape).any(1)
            free = free[~on_hard]
        np.add.at(m, (bg, d_lab[free]), 1)
    return m

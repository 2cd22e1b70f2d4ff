"""Precision, recall and F1 against a confidence threshold, from a `VocResult`.

A detection counts when its score >= the threshold. Matching is VOC's at the result's
min_overlap; detections on difficult objects are left out. "all" pools the classes (micro
average: summed TP, FP and ground truth), so it is the share of drawn boxes that are right and
the share of objects found. Empty cases give 0, never a division by zero.
"""
from __future__ import annotations

import numpy as np

from .voc import VocResult


def _prf(tp: np.ndarray, n_det: np.ndarray, n_gt: np.ndarray) -> tuple[np.ndarray, ...]:
    tp, n_det, n_gt = (np.asarray(x, dtype=np.float64) for x in (tp, n_det, n_gt))
    p = np.divide(tp, n_det, out=np.zeros_like(tp), where=n_det > 0)
    r = np.divide(tp, n_gt, out=np.zeros_like(tp), where=n_gt > 0)
    f1 = np.divide(2 * p * r, p + r, out=np.zeros_like(tp), where=(p + r) > 0)
    return p, r, f1


def _counts(voc: VocResult, confidences: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TP and detection counts per class [C, G] at each confidence of `confidences`."""
    c = np.asarray(confidences, dtype=np.float64).reshape(-1)
    tp = np.zeros((len(voc.scores), len(c)), dtype=np.int64)
    nd = np.zeros_like(tp)
    for k, (s, t) in enumerate(zip(voc.scores, voc.tp)):
        n = np.searchsorted(-s, -c, side="right")  # scores are descending
        cum = np.r_[0, np.cumsum(t)]
        tp[k], nd[k] = cum[n], n
    return tp, nd


def prf_at(voc: VocResult, confidence: float) -> dict:
    """P/R/F1 per class and pooled ("all") at `confidence`."""
    tp, nd = _counts(voc, np.array([confidence]))
    p, r, f1 = _prf(tp[:, 0], nd[:, 0], voc.n_gt)
    ap, ar, af1 = _prf(tp.sum(), nd.sum(), voc.n_gt.sum())
    return {"confidence": float(confidence), "precision": float(ap), "recall": float(ar),
            "f1": float(af1), "tp": int(tp.sum()), "fp": int(nd.sum() - tp.sum()),
            "per_class": {"precision": p, "recall": r, "f1": f1}}


def best_f1(voc: VocResult) -> dict:
    """The threshold maximising pooled F1 (the highest one on ties) and P/R/F1 there."""
    scores = np.concatenate(voc.scores) if voc.scores else np.zeros(0)
    if len(scores) == 0:
        return prf_at(voc, 1.0) | {"confidence": 1.0}
    tp = np.concatenate(voc.tp)
    order = np.argsort(-scores, kind="stable")
    s, ctp = scores[order], np.cumsum(tp[order])
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True])  # last index of each distinct score
    _, _, f1 = _prf(ctp[last], last + 1, np.full(len(last), voc.n_gt.sum()))
    best = int(np.argmax(f1))
    return prf_at(voc, float(s[last[best]]))


def envelope_at(recall: np.ndarray, precision: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The interpolated precision (best precision at recall >= r, 0 past the last recall) on grid."""
    if len(recall) == 0:
        return np.zeros(len(grid))
    env = np.maximum.accumulate(precision[::-1])[::-1]
    at = np.searchsorted(recall, grid, side="left")
    return np.where(at < len(env), env[np.minimum(at, len(env) - 1)], 0.0)


def pr_envelopes(voc: VocResult, grid: np.ndarray) -> tuple[list[int], np.ndarray, np.ndarray | None]:
    """Each class's interpolated PR curve on the recall `grid` (its area is the class AP) and their
    mean (whose area is the mAP), over the classes with ground truth.

    Returns (class indices, curves [K, G], mean [G] or None without any such class).
    """
    ks = [k for k in range(len(voc.ap)) if not np.isnan(voc.ap[k])]
    curves = np.array([envelope_at(voc.recall[k], voc.precision[k], grid) for k in ks]).reshape(len(ks), len(grid))
    return ks, curves, (curves.mean(axis=0) if ks else None)


def prf_curve(voc: VocResult, confidences: np.ndarray) -> dict[str, np.ndarray]:
    """P/R/F1 per class [C, G] and pooled [G] on a grid of confidences."""
    tp, nd = _counts(voc, confidences)
    p, r, f1 = _prf(tp, nd, voc.n_gt[:, None].repeat(tp.shape[1], 1))
    ap, ar, af1 = _prf(tp.sum(0), nd.sum(0), np.full(tp.shape[1], voc.n_gt.sum()))
    return {"confidence": np.asarray(confidences, dtype=np.float64), "precision": p, "recall": r,
            "f1": f1, "all_precision": ap, "all_recall": ar, "all_f1": af1}

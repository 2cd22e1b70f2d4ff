"""The speed helpers of detpipe.metrics against the plain things they replace: the packed-key
lexsort against np.lexsort, the CSV writer against csv.writer, the vectorised confusion matrix
against the per-image greedy loop, pair chunking against one chunk."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from detpipe.metrics import confusion_matrix
from detpipe.metrics._pairs import group_pairs
from detpipe.metrics._sort import lexsort
from detpipe.metrics.csvout import write_columns
from detpipe.metrics.voc import voc_iou_plus1

from .test_metrics_voc import random_case


@pytest.mark.parametrize("seed", range(6))
def test_lexsort_equals_numpy(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 3000))
    keys = (np.round(rng.random(n), 2), rng.integers(-5, 5, n), -np.round(rng.random(n), 1),
            rng.integers(0, 10**12, n), rng.random(n) < 0.5)
    for k in range(1, len(keys) + 1):
        np.testing.assert_array_equal(lexsort(keys[:k]), np.lexsort(keys[:k]))
    np.testing.assert_array_equal(lexsort((np.array([0.0, -0.0, np.nan, 0.0]),)),
                                  np.lexsort((np.array([0.0, -0.0, np.nan, 0.0]),)))
    pairs = rng.permutation(n)  # distinct rows: no index needed
    np.testing.assert_array_equal(lexsort((pairs % 7, pairs), distinct=True), np.lexsort((pairs % 7, pairs)))


def test_csv_writer_is_byte_identical_to_csv_module(tmp_path):
    """Every value k / 1e6 (all 1,000,001 of them) and rounding edges, as the map stage writes."""
    rng = np.random.default_rng(0)
    every = np.arange(1_000_001) / 1e6
    edges = np.array([0.0, 1.0, 5e-7, 4.999e-7, 0.9999995, 0.99999949, 1e-4, 9.95e-5, 0.1234565, 1 / 3])
    cols = [every, rng.permutation(every), np.r_[rng.random(len(every) - len(edges)), edges]]
    for columns in (cols, [edges, edges[::-1], edges], [np.array([0.5, 1.5]), np.array([0.1, -0.0])],
                    [np.zeros(0), np.zeros(0)]):
        write_columns(tmp_path / "fast.csv", ["a", "b", "c"][:len(columns)], columns)
        with open(tmp_path / "ref.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["a", "b", "c"][:len(columns)])
            w.writerows(zip(*(np.round(c, 6) for c in columns)))
        assert (tmp_path / "fast.csv").read_bytes() == (tmp_path / "ref.csv").read_bytes()


def loop_confusion(gts, dets, num_classes, confidence, iou):
    """The per-image greedy loop (detpipe's implementation before vectorisation)."""
    bg = num_classes
    m = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    for g, d in zip(gts, dets):
        diff = np.asarray(g["difficult"], bool)
        hard, g_box, g_lab = g["boxes"][diff], g["boxes"][~diff], g["labels"][~diff]
        keep = d["scores"] >= confidence
        d_box, d_lab = d["boxes"][keep], d["labels"][keep]
        pairs = [(float(voc_iou_plus1(g_box[i:i + 1], d_box[j:j + 1])[0]), i, j)
                 for i in range(len(g_lab)) for j in range(len(d_lab))]
        pairs = sorted((p for p in pairs if p[0] >= iou), key=lambda p: -p[0])  # stable: object, det
        g_used, d_used = set(), set()
        for _, i, j in pairs:
            if i not in g_used and j not in d_used:
                g_used.add(i)
                d_used.add(j)
                m[g_lab[i], d_lab[j]] += 1
        for i in range(len(g_lab)):
            if i not in g_used:
                m[g_lab[i], bg] += 1
        for j in range(len(d_lab)):
            if j not in d_used and not any(voc_iou_plus1(d_box[j:j + 1], h[None])[0] >= iou for h in hard):
                m[bg, d_lab[j]] += 1
    return m


@pytest.mark.parametrize("seed", range(12))
def test_confusion_matrix_equals_greedy_loop(seed):
    rng = np.random.default_rng(seed)
    n_cls = int(rng.integers(1, 5))
    gts, dets = random_case(rng, int(rng.integers(1, 20)), n_cls, max_gt=8, max_det=30,
                            integer=seed % 2 == 0)  # integer boxes: many IoU ties
    for conf, iou in ((0.5, 0.5), (0.0, 0.3), (0.3, 0.0)):
        np.testing.assert_array_equal(confusion_matrix(gts, dets, n_cls, conf, iou),
                                      loop_confusion(gts, dets, n_cls, conf, iou))


def test_pair_chunks_cover_every_pair_once():
    rng = np.random.default_rng(1)
    gt_keys = np.sort(rng.integers(0, 50, 300))
    det_keys = rng.integers(0, 60, 1000)
    whole = np.concatenate([np.c_[d, g] for d, g in group_pairs(det_keys, gt_keys, budget=10**9)])
    chunks = np.concatenate([np.c_[d, g] for d, g in group_pairs(det_keys, gt_keys, budget=7)])
    np.testing.assert_array_equal(whole, chunks)
    expected = [(d, g) for d in range(len(det_keys)) for g in range(len(gt_keys)) if det_keys[d] == gt_keys[g]]
    assert [tuple(p) for p in whole] == expected
    sparse = [np.c_[d, g] for d, g in group_pairs(det_keys * 10**9, gt_keys * 10**9)]  # binary search path
    np.testing.assert_array_equal(np.concatenate(sparse), whole)

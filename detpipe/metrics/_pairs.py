"""Sparse (detection, ground truth) pairs within the same (image, class) group.

Both VOC and COCO only compare boxes of one image and one class, so instead of dense
images x boxes matrices we enumerate the pairs of each group, in chunks of bounded size.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

PAIR_BUDGET = 1 << 16  # pairs per chunk: temporaries of a few MB stay in cache and are reused


def group_pairs(det_keys: np.ndarray, gt_keys_sorted: np.ndarray,
                budget: int = PAIR_BUDGET) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (det_index, gt_index) arrays of every pair with equal keys, det-major.

    `gt_keys_sorted` must be ascending; within a det the gts come in ascending index order,
    which preserves the ground-truth input order when the sort producing it was stable.
    """
    lo, count = _ranges(det_keys, gt_keys_sorted)
    csum = np.cumsum(count)
    start, n = 0, len(det_keys)
    while start < n:
        before = csum[start - 1] if start else 0
        end = max(int(np.searchsorted(csum, before + budget, "right")), start + 1)
        c = count[start:end]
        total = int(c.sum())
        if total:
            det = np.repeat(np.arange(start, end), c)
            first = np.cumsum(c) - c
            gt = np.repeat(lo[start:end] - first, c) + np.arange(total)
            yield det, gt
        start = end


def _ranges(keys: np.ndarray, sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and length of each key's run in `sorted_keys` (length 0 where absent)."""
    span = int(max(keys.max(initial=-1), sorted_keys.max(initial=-1))) + 1
    if keys.min(initial=0) >= 0 and sorted_keys.min(initial=0) >= 0 and span <= 8 * (len(keys) + len(sorted_keys)):
        # dense keys (image * classes + class): a lookup table beats binary search ~5x
        count = np.bincount(sorted_keys, minlength=span)
        start = np.cumsum(count) - count
        return start[keys], count[keys]
    lo = np.searchsorted(sorted_keys, keys, "left")
    return lo, np.searchsorted(sorted_keys, keys, "right") - lo


def first_per_segment(mask: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """Indices of the first True of `mask` in each run of equal values of sorted `seg`."""
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        return idx
    s = seg[idx]
    return idx[np.r_[True, s[1:] != s[:-1]]]

"""Seeded train/val/test splits, stratified by class presence, or taken from VOC ImageSets.

Stratification follows iterative stratification (Sechidis et al., 2011): the rarest class is
placed first, each of its images going to the split that still needs that class most. Before
that, every class with at least one image per split gets one image in each split, so val and test
can measure every class whenever the counts allow it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from detpipe.annotations import Record

SPLITS = ("train", "val", "test")


class SplitError(ValueError):
    """The split cannot be made as configured; the message says why and the fix."""


def target_sizes(n: int, fractions: Sequence[float]) -> list[int]:
    """Split sizes summing to n (largest remainder), each non-zero fraction getting >= 1 image
    when n allows it."""
    f = np.asarray(fractions, dtype=np.float64)
    if (f < 0).any() or abs(f.sum() - 1.0) > 1e-3:
        raise SplitError(f"split fractions {list(map(float, f))} must be >= 0 and sum to 1 "
                         f"(they sum to {f.sum():g}). Fix: split.train + split.val + split.test = 1.")
    raw = f * n
    sizes = np.floor(raw).astype(int)
    for k in np.argsort(-(raw - sizes), kind="stable")[: n - sizes.sum()]:
        sizes[k] += 1
    for k in np.flatnonzero((f > 0) & (sizes == 0)):
        donor = int(np.argmax(sizes))
        if sizes[donor] > 1:
            sizes[donor] -= 1
            sizes[k] += 1
    return sizes.tolist()


def _cover(m: np.ndarray, order: np.ndarray, assign: np.ndarray, cap: np.ndarray, need: np.ndarray) -> None:
    """Give every split (with room) one image of each class, rarest class first."""
    counts = m.sum(axis=0)
    for c in np.argsort(counts, kind="stable"):
        if counts[c] < int((cap > 0).sum()):
            continue
        for s in range(len(cap)):
            if cap[s] <= 0 or (m[:, c] & (assign == s)).any():
                continue
            free = order[m[order, c] & (assign[order] < 0)]
            if len(free):
                # The image with the fewest other classes distorts the other classes' ratios least.
                i = free[int(np.argmin(m[free].sum(axis=1)))]
                _place(i, s, m, assign, cap, need)


def _place(i: int, s: int, m: np.ndarray, assign: np.ndarray, cap: np.ndarray, need: np.ndarray) -> None:
    assign[i] = s
    cap[s] -= 1
    need[m[i], s] -= 1


def stratified_assign(labels: list[set[int]], n_classes: int, fractions: Sequence[float], seed: int) -> np.ndarray:
    """Split index (0=train, 1=val, 2=test) per image; deterministic in (labels, fractions, seed);
    split sizes equal `target_sizes`."""
    n = len(labels)
    m = np.zeros((n, n_classes), dtype=bool)
    for i, present in enumerate(labels):
        m[i, sorted(present)] = True
    order = np.random.default_rng(seed).permutation(n)
    assign = np.full(n, -1)
    cap = np.array(target_sizes(n, fractions))
    need = m.sum(axis=0)[:, None] * np.asarray(fractions, dtype=np.float64)[None, :]
    _cover(m, order, assign, cap, need)
    while True:
        left = m[assign < 0].sum(axis=0)
        if not left.any():
            break
        c = int(np.argmin(np.where(left > 0, left, np.iinfo(np.int64).max)))
        for i in order[m[order, c] & (assign[order] < 0)]:
            open_ = np.flatnonzero(cap > 0)
            s = int(open_[np.lexsort((-cap[open_], -need[c, open_]))[0]])
            _place(i, s, m, assign, cap, need)
    for i in order[assign[order] < 0]:
        _place(i, int(np.argmax(cap)), m, assign, cap, need)
    return assign


def split_records(records: Sequence[Record], n_classes: int, fractions: Sequence[float],
                  seed: int) -> dict[str, list[Record]]:
    """Seeded stratified split; each split keeps the input order of its records."""
    paths = [r.path for r in records]
    if len(set(paths)) != len(paths):
        dup = next(p for p in paths if paths.count(p) > 1)
        raise SplitError(f"image {dup!r} appears more than once in the annotations; val and test "
                         "could share it. Fix: one line per image (rerun annotate).")
    labels = [set(int(v) for v in r.labels) for r in records]
    assign = stratified_assign(labels, n_classes, fractions, seed)
    return {name: [r for r, a in zip(records, assign) if a == k] for k, name in enumerate(SPLITS)}


def read_imageset(path: Path) -> list[str]:
    """Image ids of one ImageSets/Main/<split>.txt (first token per line; VOC's per-class files
    carry a second column)."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise SplitError(f"{path}: not found, but split.use_imagesets is true. Fix: provide "
                         "ImageSets/Main/{train,val,test}.txt or set split.use_imagesets: false.") from None
    return [ln.split()[0] for ln in lines if ln.strip()]


def imagesets_split(records: Sequence[Record], root: str | Path) -> tuple[dict[str, list[Record]], list[str]]:
    """Use <root>/ImageSets/Main/{train,val,test}.txt; ids are image stems. Returns the splits and
    warnings (ids without a kept image, kept images in no list). An id in two lists is an error."""
    by_stem: dict[str, Record] = {}
    for r in records:
        stem = Path(r.path).stem
        if stem in by_stem:
            raise SplitError(f"images {by_stem[stem].path!r} and {r.path!r} share the id {stem!r}; "
                             "ImageSets lists ids, so the split is ambiguous. Fix: rename one.")
        by_stem[stem] = r
    lists = {name: read_imageset(Path(root) / "ImageSets" / "Main" / f"{name}.txt") for name in SPLITS}
    seen: dict[str, str] = {}
    for name, ids in lists.items():
        for i in ids:
            if seen.get(i, name) != name:
                raise SplitError(f"id {i!r} is in both {seen[i]}.txt and {name}.txt under "
                                 f"{Path(root) / 'ImageSets' / 'Main'}; splits must be disjoint. Fix: remove it from one.")
            seen[i] = name
    warnings = [f"ImageSets id {i!r} ({seen[i]}.txt) has no kept image; ignored" for i in seen if i not in by_stem]
    warnings += [f"{r.path}: in no ImageSets list; left out of every split" for s, r in by_stem.items() if s not in seen]
    splits = {name: [by_stem[i] for i in dict.fromkeys(ids) if i in by_stem] for name, ids in lists.items()}
    return splits, warnings


# Training needs images in both: without train images nothing is learnt, and without val images
# every epoch scores mAP50 0, so best.pt would silently be the first epoch's weights.
_NEEDED = {"train": "there is nothing to train on",
           "val": "the best epoch is chosen by val mAP50, so best.pt would be the first epoch's weights"}


def empty_split_problem(splits: dict[str, list], split_params, params_path: str | Path) -> str | None:
    """Why training cannot use these splits and the fix (None: train and val both have images).
    `split_params` is params.split."""
    for name, why in _NEEDED.items():
        if not splits.get(name):
            fix = (f"list {name} images in <data.root>/ImageSets/Main/{name}.txt" if split_params.use_imagesets
                   else f"raise split.{name} in {params_path} (now {getattr(split_params, name):g}) or add images")
            return f"the {name} split has no images: {why}. Fix: {fix}"
    return None

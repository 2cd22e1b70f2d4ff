"""Stable seeded train/val/test splits, or the VOC ImageSets lists.

An image's split is decided by a hash of its path (relative to data.root) and the seed: it keeps
its split when other images are added or removed, so test mAPs before and after a data change
are measured on the same test images. Split sizes follow the fractions in expectation (binomial
noise: 45 +- 6 test images of 300 at 0.15), and class shares likewise.

One exception keeps every split able to measure every class: a class with images enough for
every split but none in one of them gets one image moved there — the image of that class whose
hash lies nearest the split's range, taken from the split holding most of that class. These
moves are listed in the split report; they can change when that class's images change.
"""
from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath
from typing import Sequence

import numpy as np

from detpipe.data.annotations import Record

SPLITS = ("train", "val", "test")


class SplitError(ValueError):
    """The split cannot be made as configured; the message says why and the fix."""


def check_fractions(fractions: Sequence[float]) -> np.ndarray:
    f = np.asarray(fractions, dtype=np.float64)
    if (f < 0).any() or abs(f.sum() - 1.0) > 1e-3:
        raise SplitError(f"split fractions {list(map(float, f))} must be >= 0 and sum to 1 "
                         f"(they sum to {f.sum():g}). Fix: split.train + split.val + split.test = 1.")
    return f / f.sum()


def split_key(name: str, seed: int) -> float:
    """A number in [0, 1) fixed by (seed, name) alone: the image's place on the split line."""
    digest = hashlib.sha256(f"{seed}\0{name}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def relative_name(path: str, root: str | Path) -> str:
    """The image path relative to the data root (so moving the whole dataset keeps every split)."""
    p, r = PurePosixPath(Path(path).as_posix()), PurePosixPath(Path(root).as_posix())
    try:
        return p.relative_to(r).as_posix()
    except ValueError:
        return p.as_posix()


def hash_assign(keys: np.ndarray, fractions: Sequence[float]) -> np.ndarray:
    """Split index (0 train, 1 val, 2 test) per key: key in [sum(f[:k]), sum(f[:k+1]))."""
    edges = np.cumsum(check_fractions(fractions))[:-1]
    return np.searchsorted(edges, keys, side="right")


def _gap(key: float, lo: float, hi: float) -> float:
    return max(lo - key, key - hi, 0.0)


def cover_classes(m: np.ndarray, keys: np.ndarray, assign: np.ndarray, fractions: Sequence[float]
                  ) -> list[tuple[int, int, int]]:
    """Move the fewest images so that every class with at least one image per open split reaches
    every open split (fraction > 0). m: Tensor-like bool [N, C] of class presence. Changes
    `assign` in place; returns the moves as (image, from split, to split)."""
    f = check_fractions(fractions)
    bounds = np.concatenate([[0.0], np.cumsum(f)])
    open_splits = [s for s in range(len(f)) if f[s] > 0]
    moves = []
    for c in np.argsort(m.sum(axis=0), kind="stable"):
        if m[:, c].sum() < len(open_splits):
            continue
        for s in open_splits:
            have = np.bincount(assign[m[:, c]], minlength=len(f))
            if have[s]:
                continue
            donor = int(np.argmax(np.where(np.arange(len(f)) == s, -1, have)))
            if have[donor] < 2:
                continue
            candidates = np.flatnonzero(m[:, c] & (assign == donor))
            gaps = [_gap(keys[i], bounds[s], bounds[s + 1]) for i in candidates]
            i = int(candidates[int(np.argmin(gaps))])
            assign[i] = s
            moves.append((i, donor, s))
    return moves


def split_records(records: Sequence[Record], n_classes: int, fractions: Sequence[float], seed: int,
                  root: str | Path = "") -> tuple[dict[str, list[Record]], list[str]]:
    """Stable hashed split with class coverage; each split keeps the input order of its records.

    Returns the splits and one note per coverage move (for the report)."""
    paths = [r.path for r in records]
    if len(set(paths)) != len(paths):
        dup = next(p for p in paths if paths.count(p) > 1)
        raise SplitError(f"image {dup!r} appears more than once in the annotations; val and test "
                         "could share it. Fix: one line per image (rerun annotate).")
    names = [relative_name(p, root) for p in paths]
    keys = np.array([split_key(n, seed) for n in names], dtype=np.float64)
    assign = hash_assign(keys, fractions)
    m = np.zeros((len(records), n_classes), dtype=bool)
    for i, r in enumerate(records):
        m[i, np.unique(r.labels.astype(np.int64))] = True
    moves = cover_classes(m, keys, assign, fractions)
    notes = [f"{names[i]}: moved from {SPLITS[a]} to {SPLITS[b]} so that every class reaches {SPLITS[b]}"
             for i, a, b in moves]
    return {name: [r for r, a in zip(records, assign) if a == k] for k, name in enumerate(SPLITS)}, notes


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
    `split_params` is params.split, or None where the split settings are not at hand (the train
    stage reads no split params: they do not change its weights)."""
    for name, why in _NEEDED.items():
        if not splits.get(name):
            if split_params is None:
                fix = f"raise split.{name} in {params_path} (or list {name} images in ImageSets) or add images"
            elif split_params.use_imagesets:
                fix = f"list {name} images in <data.root>/ImageSets/Main/{name}.txt"
            else:
                fix = f"raise split.{name} in {params_path} (now {getattr(split_params, name):g}) or add images"
            return f"the {name} split has no images: {why}. Fix: {fix}"
    return None

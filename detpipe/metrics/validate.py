"""Checks shared by every input format of `evaluate` (txt folders, COCO JSON, the detections CSV).

Errors are one line naming the file and line (or entry) and what is expected; problems that do
not stop the evaluation become warnings, one line per kind, that the CLI prints and info.json
keeps.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence

import numpy as np



class InputError(ValueError):
    """A ground-truth or detection file is missing or malformed; the message says where."""


# params.MapParams.confidence (not imported: params pulls in yaml); a test checks they agree.
MAP_CONFIDENCE = 0.001
# detections whose lowest score is this far above MAP_CONFIDENCE were thresholded by their tool
THRESHOLDED_FACTOR = 100


def check_numbers(values: np.ndarray, columns: Sequence[str], where: Callable[[int], str],
                  box: slice, xywh: bool) -> None:
    """Raise InputError for the first row holding a non-finite number or a box of negative
    width or height. `values[:, box]` is the box, x1 y1 x2 y2 or (xywh) x y w h; `columns` names
    every column for the message."""
    if len(values) == 0:  # no rows (a model with no box above --txt-conf): nothing to check
        return
    values = np.asarray(values, np.float64).reshape(len(values), -1)
    finite = np.isfinite(values)
    b = values[:, box]
    size = b[:, 2:] if xywh else b[:, 2:] - b[:, :2]
    bad = ~finite.all(axis=1) | (size < 0).any(axis=1)
    if not bad.any():
        return
    row = int(np.argmax(bad))
    if not finite[row].all():
        col = int(np.argmax(~finite[row]))
        raise InputError(f"{where(row)}: {columns[col]} {values[row, col]} is not finite")
    shown = [float(v) if v != int(v) else int(v) for v in b[row]]
    expected = "[x, y, w, h] with w, h >= 0" if xywh else "x1 y1 x2 y2 with x2 >= x1 and y2 >= y1"
    raise InputError(f"{where(row)}: box {shown} has a negative width or height (expected {expected})")


def nearest_name(name: str, candidates: Sequence[str]) -> str | None:
    """The candidate equal up to case and blanks, else the closest spelling (difflib), or None."""
    squash = lambda s: "".join(s.split()).lower()  # noqa: E731
    same = [c for c in candidates if squash(c) == squash(name)]
    if same:
        return same[0]
    close = difflib.get_close_matches(squash(name), [squash(c) for c in candidates], n=1, cutoff=0.75)
    return next(c for c in candidates if squash(c) == close[0]) if close else None


def _hint(name: str, candidates: Sequence[str], phrase: str = "did you mean {}?") -> str:
    near = nearest_name(name, candidates)
    return "; " + phrase.format(repr(near)) if near else ""


def class_warnings(names: Sequence[str], n_gt: np.ndarray, n_det: np.ndarray,
                   unscored: dict[str, int]) -> list[str]:
    """Warnings for classes present on one side only.

    `n_gt`/`n_det` count the objects and detections of each of `names`; `unscored` counts the
    detections of class names outside `names` (dropped: nothing to score them against)."""
    out = []
    gt_names = [n for n, g in zip(names, n_gt) if g > 0]
    for name, count in sorted(unscored.items(), key=lambda kv: -kv[1]):
        out.append(f"class {name!r}: {count} detection(s) of a class absent from the ground truth, "
                   f"not scored{_hint(name, gt_names)}")
    only_det = [n for n, g, d in zip(names, n_gt, n_det) if g == 0 and d > 0]
    for name in only_det:
        out.append(f"class {name!r}: detections but no ground-truth object; no AP, not in the "
                   f"mean{_hint(name, gt_names)}")
    det_names = [n for n, d in zip(names, n_det) if d > 0] + list(unscored)
    for name, g, d in zip(names, n_gt, n_det):
        if g > 0 and d == 0:
            out.append(f"class {name!r}: {int(g)} ground-truth object(s) and no detection, AP 0"
                       f"{_hint(name, [n for n in det_names if n != name], 'detections have {}')}")
    return out


def thresholded_warning(scores: np.ndarray, map_confidence: float = MAP_CONFIDENCE) -> list[str]:
    """A warning when no detection scores below THRESHOLDED_FACTOR x the mAP confidence: the
    detector's own threshold cut the low-score tail that mAP integrates over."""
    if len(scores) == 0 or scores.min() < THRESHOLDED_FACTOR * map_confidence:
        return []
    low = float(scores.min())
    return [f"detections look thresholded: the lowest of {len(scores)} scores is {low:.4g}, far above "
            f"the {map_confidence:g} that mAP needs, so mAP is computed without the boxes below "
            f"{low:.4g} and comes out too low. Fix: keep boxes down to {map_confidence:g} in the "
            f"detector (detpipe: predict --save-txt --conf {map_confidence:g})"]

"""A whole evaluation as flat arrays, one row per box: the form every metric works on.

The per-image list API (`gts[i]`, `dets[i]` dicts) is flattened once by `from_lists`; readers of
large inputs build `EvalData` directly, so 490k detections never become 5,000 small dicts.
Rows are image-major (image index ascending, input order within an image): VOC breaks score
ties by image then input order, and relies on it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EvalData:
    """Ground truth (g_*) and detections (d_*) of `num_images` images.

    g_img int64 [M], g_box float64 [M, 4] x1 y1 x2 y2, g_lab int64 [M], g_diff bool [M];
    d_img int64 [K], d_box float64 [K, 4], d_lab int64 [K], d_score float64 [K].
    """

    num_images: int
    g_img: np.ndarray
    g_box: np.ndarray
    g_lab: np.ndarray
    g_diff: np.ndarray
    d_img: np.ndarray
    d_box: np.ndarray
    d_lab: np.ndarray
    d_score: np.ndarray

    def check(self, num_classes: int) -> "EvalData":
        """Raise ValueError naming the side and image of the first class id outside 0..C-1."""
        for side, lab, img in (("gts", self.g_lab, self.g_img), ("dets", self.d_lab, self.d_img)):
            bad = np.flatnonzero((lab < 0) | (lab >= num_classes))
            if len(bad):
                raise ValueError(f"{side}[{int(img[bad[0]])}]: class id {int(lab[bad[0]])} "
                                 f"outside 0..{num_classes - 1}")
        return self


def _column(items: list[dict], key: str, dtype, sizes: list[int], optional: bool = False) -> np.ndarray:
    """items[i][key] for every item, concatenated (zeros where an optional key is absent)."""
    cols = [np.asarray(it[key], dtype).reshape(-1) if key in it or not optional else np.zeros(n, dtype)
            for it, n in zip(items, sizes)]
    return np.concatenate(cols) if cols else np.zeros(0, dtype)


def from_lists(gts: list[dict], dets: list[dict]) -> EvalData:
    """Flatten per-image dicts, checking that they line up (errors name the image and field;
    class ids are checked by the metric, which knows the number of classes).

    gts[i]: {"boxes" [M,4] xyxy, "labels" [M], "difficult" [M] (optional)};
    dets[i]: {"boxes" [K,4] xyxy, "labels" [K], "scores" [K]}.
    """
    if len(gts) != len(dets):
        raise ValueError(f"{len(gts)} ground-truth images but {len(dets)} detection images")
    sizes = {}
    for name, items, keys in (("gts", gts, ("labels", "difficult")), ("dets", dets, ("labels", "scores"))):
        sizes[name] = [np.size(it["boxes"]) // 4 for it in items]
        for i, (item, n) in enumerate(zip(items, sizes[name])):
            for k in keys:
                if k in item and np.size(item[k]) != n:
                    raise ValueError(f"{name}[{i}]: {n} boxes but {np.size(item[k])} {k}")
    ng, nd = sizes["gts"], sizes["dets"]
    boxes = [np.asarray(it["boxes"], np.float64).reshape(-1, 4) for it in gts + dets]
    return EvalData(
        num_images=len(gts),
        g_img=np.repeat(np.arange(len(gts)), ng), g_box=np.concatenate(boxes[:len(gts)] or [np.zeros((0, 4))]),
        g_lab=_column(gts, "labels", np.int64, ng),
        g_diff=_column(gts, "difficult", bool, ng, optional=True),
        d_img=np.repeat(np.arange(len(dets)), nd), d_box=np.concatenate(boxes[len(gts):] or [np.zeros((0, 4))]),
        d_lab=_column(dets, "labels", np.int64, nd), d_score=_column(dets, "scores", np.float64, nd))


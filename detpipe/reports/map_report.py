"""The map stage's reports, shared by stages/map.py and `python -m detpipe evaluate`."""
from __future__ import annotations

import csv
import math
import re
import time
from pathlib import Path

import numpy as np

from ..artifacts.metrics import (COCO_STATS, SIZE_STATS, CocoStats, Counts, MapInfo, MapMetrics, Prf, PrfScores,
                                 SizeStats, VocStats)
from ..metrics.coco import coco_eval_arrays, coco_eval_flat
from ..metrics.confusion import confusion_matrix_flat
from ..metrics.csvout import write_columns
from ..metrics.curves import best_f1, pr_envelopes, prf_at, prf_curve
from ..metrics.flat import EvalData, from_lists
from ..metrics.voc import voc_map_flat
from ..sizes import AREA_NAMES, AREA_RNG
from . import counted

CONVENTIONS = {
    "map50": "PASCAL VOC all-point interpolated AP at min_overlap (key name kept as map50 whatever "
             "min_overlap is), averaged over classes with non-difficult ground truth; VOC devkit / "
             "Cartucho mAP rules: +1 pixel widths and areas, greedy by descending score (ties: image "
             "order, then input order), a detection whose best-IoU object is already matched is a "
             "false positive, difficult objects neither counted nor penalised, classes with ground "
             "truth and no detection count 0. voc07: 11-point AP instead.",
    "map50_95": "COCO AP@[.50:.05:.95] as pycocotools COCOeval (bbox): xywh without +1, 101 recall "
                "points, maxDets 100 per image and class, difficult objects as iscrowd.",
    "coco": "the 12 pycocotools stats (-1 where an area range has no ground truth) and per-class AP@[.5:.95].",
    "sizes": "per COCO area range (small < 32², medium 32²-96², large > 96² pixels², box area on the original "
             "image, bounds inclusive as in pycocotools): non-difficult ground truth, how many of them a "
             "detection matches at IoU 0.5 (COCO greedy matching, top 100 per image and class), and AP at "
             "IoU 0.5 (null without ground truth); AP@[.5:.95] per range is coco.APs/APm/APl.",
    "at_confidence": "precision, recall, F1 of detections with score >= predict.confidence, VOC matching "
                     "at min_overlap, pooled over classes (summed TP, FP and objects).",
    "best_f1": "the same at the confidence maximising pooled F1.",
    "confusion_matrix": "rows true class, columns predicted class, last = background; one-to-one "
                        "matching by descending IoU >= min_overlap regardless of class, detections "
                        "with score >= predict.confidence; difficult objects left out.",
}


# The pooled curve's name in pr.csv: a label, not a class (a class may be called "all").
ALL_CLASSES = "(all classes)"


def _num(x: float) -> float | None:
    """JSON has no NaN: classes without ground truth get null."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 6)


def _prf(d: dict) -> Prf:
    return Prf(**{k: _num(d[k]) for k in ("confidence", "precision", "recall", "f1")})


def safe_name(name: str) -> str:
    """A class name usable as a file name on every OS."""
    return re.sub(r"[^\w.-]+", "_", name, flags=re.UNICODE).strip("._") or "class"


def write_map_reports(out_dir: str | Path, gts: list[dict], dets: list[dict], class_names: list[str],
                      min_overlap: float = 0.5, voc07: bool = False, confidence: float = 0.5,
                      coco_data: dict | None = None) -> MapMetrics:
    """`write_reports` for per-image lists (see `voc_map`)."""
    return write_reports(out_dir, from_lists(gts, dets), class_names, min_overlap, voc07, confidence,
                         coco_data=coco_data)


def write_reports(out_dir: str | Path, data: EvalData, class_names: list[str], min_overlap: float = 0.5,
                  voc07: bool = False, confidence: float = 0.5, coco_data: dict | None = None,
                  plots: bool = True, warnings: list[str] | None = None) -> MapMetrics:
    """Compute VOC and COCO metrics, curves and the confusion matrix; write them under out_dir.

    Writes metrics.json, pr/<class>.csv, pr.csv, prf_confidence.csv, prf_pooled.csv, confusion_matrix.csv
    and info.json
    (with `warnings`, when given), and with `plots` pr/pr_curves.png, prf_confidence.png and
    confusion_matrix.png; returns the metrics.json content (`MapMetrics`). `coco_data` (from
    `io.read_coco_json`) makes the COCO side use the file's own boxes, areas and crowd flags.
    """
    start = time.perf_counter()
    out = Path(out_dir)
    (out / "pr").mkdir(parents=True, exist_ok=True)
    n_cls = len(class_names)
    t0 = time.perf_counter()
    voc = voc_map_flat(data, n_cls, min_overlap=min_overlap, use_07=voc07)
    t_voc = time.perf_counter() - t0
    t0 = time.perf_counter()
    if coco_data is not None:
        g, d = coco_data["gt"], coco_data["det"]
        coco = coco_eval_arrays(g["img"], g["cat"], g["xywh"], g["area"], g["crowd"], d["img"], d["cat"],
                                d["xywh"], d["score"], coco_data["num_images"], n_cls)
    else:
        coco = coco_eval_flat(data, n_cls)
    t_coco = time.perf_counter() - t0
    at_conf = prf_at(voc, confidence)
    best = best_f1(voc)
    matrix = confusion_matrix_flat(data, n_cls, confidence, min_overlap)

    metrics = MapMetrics(
        map50=_num(voc.map), min_overlap=float(min_overlap), voc07=bool(voc07), map50_95=_num(coco.stats[0]),
        voc=VocStats(per_class={n: _num(a) for n, a in zip(class_names, voc.ap)}),
        coco=CocoStats(**{k: _num(v) for k, v in coco.as_dict().items()},
                       per_class={n: _num(a) for n, a in zip(class_names, coco.per_class_ap)}),
        sizes=size_stats(coco), at_confidence=_prf(at_conf), best_f1=_prf(best))
    metrics.write(out / "metrics.json")

    stems = _stems(class_names)
    for k, stem in enumerate(stems):
        write_columns(out / "pr" / f"{stem}.csv", ["recall", "precision", "confidence"],
                      [voc.recall[k], voc.precision[k], voc.scores[k]])
    grid = np.round(np.linspace(0, 1, 101), 2)
    write_plot_data(out, voc, class_names, grid)
    curve = prf_curve(voc, grid)
    with open(out / "prf_confidence.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["confidence", "class", "precision", "recall", "f1"])
        for k, name in [(None, "all")] + list(enumerate(class_names)):
            p, r, f = ((curve["all_" + m] for m in ("precision", "recall", "f1")) if k is None
                       else (curve[m][k] for m in ("precision", "recall", "f1")))
            w.writerows(zip(grid, [name] * len(grid), np.round(p, 6), np.round(r, 6), np.round(f, 6)))
    with open(out / "confusion_matrix.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["true\\predicted"] + list(class_names) + ["background"])
        for name, row in zip(list(class_names) + ["background"], matrix):
            w.writerow([name] + [int(v) for v in row])
    if plots:
        from .plots_map import plot_confusion, plot_pr_curves, plot_prf_confidence

        convention = f"VOC{'2007 11-point' if voc07 else ' all-point'}, IoU >= {min_overlap:g}, +1 px"
        plot_pr_curves(out / "pr" / "pr_curves.png", class_names, voc, convention)
        plot_prf_confidence(out / "prf_confidence.png", curve, class_names, voc.n_gt > 0, confidence, at_conf, best)
        plot_confusion(out / "confusion_matrix.png", matrix, class_names, confidence, min_overlap)

    per_image = np.bincount(data.d_img, minlength=data.num_images)
    MapInfo(
        conventions=CONVENTIONS,
        counts=Counts(images=data.num_images, images_without_detections=int(np.sum(per_image == 0)),
                      ground_truth={n: int(c) for n, c in zip(class_names, voc.n_gt)},
                      difficult=int(np.sum(data.g_diff)),
                      detections={n: int(c) for n, c in zip(class_names, voc.n_det)}),
        per_class_ap50_coco={n: _num(a) for n, a in zip(class_names, coco.per_class_ap50)},
        at_confidence_per_class={n: PrfScores(**{m: _num(at_conf["per_class"][m][k]) for m in ("precision", "recall", "f1")})
                                 for k, n in enumerate(class_names)},
        warnings=list(warnings or ()),
        seconds_voc=round(t_voc, 4), seconds_coco=round(t_coco, 4), seconds=round(time.perf_counter() - start, 3),
    ).write(out / "info.json")
    return metrics


def size_stats(coco) -> dict[str, SizeStats]:
    """MapMetrics.sizes from a CocoResult: small, medium and large."""
    rows = coco.by_area(0.5)
    return {name: SizeStats(area=[float(lo), float(hi)], ground_truth=rows[name][0], found50=rows[name][1],
                            ap50=_num(rows[name][2]) if rows[name][0] else None)
            for name, (lo, hi) in zip(AREA_NAMES, AREA_RNG) if name in SIZE_STATS}


def write_plot_data(out: Path, voc, class_names: list[str], grid: np.ndarray) -> None:
    """The tables dvc.yaml's top-level plots draw: pr.csv (class, recall, precision: each class's
    interpolated PR curve on the recall grid, then "all classes", their mean) and prf_pooled.csv
    (confidence, precision, recall, f1 of all classes pooled)."""
    ks, curves, mean = pr_envelopes(voc, grid)
    rows = [(class_names[k], curve) for k, curve in zip(ks, curves)] + ([(ALL_CLASSES, mean)] if mean is not None else [])
    with open(out / "pr.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["class", "recall", "precision"])
        for name, curve in rows:
            w.writerows(zip([name] * len(grid), grid, np.round(curve, 6)))
    pooled = prf_curve(voc, grid)
    write_columns(out / "prf_pooled.csv", ["confidence", "precision", "recall", "f1"],
                  [grid, pooled["all_precision"], pooled["all_recall"], pooled["all_f1"]])


def _stems(class_names: list[str]) -> list[str]:
    """Distinct file-name stems for the classes (safe_name, then '_' appended on collisions)."""
    used, stems = set(), []
    for name in class_names:
        stem = safe_name(name)
        while stem in used:
            stem += "_"
        used.add(stem)
        stems.append(stem)
    return stems


def format_table(metrics: MapMetrics, class_names: list[str]) -> str:
    """A plain-text summary table for the terminal."""
    ov = metrics.min_overlap
    head = f"{'class':<20} {'AP' + format(ov * 100, '.0f') + (' (07)' if metrics.voc07 else ''):>10} {'AP@[.5:.95]':>12}"
    lines = [head, "-" * len(head)]
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    for n in class_names:
        lines.append(f"{n[:20]:<20} {fmt(metrics.voc.per_class[n]):>10} {fmt(metrics.coco.per_class[n]):>12}")
    lines.append("-" * len(head))
    lines.append(f"{'mean':<20} {fmt(metrics.map50):>10} {fmt(metrics.map50_95):>12}")
    lines.append("")
    lines.append("COCO: " + "  ".join(f"{k}={fmt(getattr(metrics.coco, k))}" for k in COCO_STATS))
    lines.append("by size (area on the original image): " + "  ".join(
        f"{name} {counted(s.ground_truth, 'object')}, AP50 {fmt(s.ap50)}, found {s.found50}" for name, s in metrics.sizes.items()))
    for m, label in ((metrics.at_confidence, "at confidence"), (metrics.best_f1, "best F1")):
        lines.append(f"{label:<14} {m.confidence:.3f}: precision {fmt(m.precision)}  recall {fmt(m.recall)}  F1 {fmt(m.f1)}")
    return "\n".join(lines)

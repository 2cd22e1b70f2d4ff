"""The mAP results, split by purpose.

- reports/metrics.json (`Headline`): the one DVC metrics file, so `dvc metrics show`,
  `dvc metrics diff` and `dvc exp show` have a column for each figure that says how good a run is
  and nothing else: no settings (those are params), no timings (two identical runs must not
  differ), no per-class breakdown.
- reports/map/metrics.json (`MapMetrics`) and reports/map/info.json (`MapInfo`): everything the
  map stage (and `detpipe evaluate`) computed, a plain output each.

Scores are None (JSON null) where undefined: a class without ground truth has no AP.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from ._strict import ArtifactError, StrictJson

__all__ = ["ArtifactError", "Prf", "CocoStats", "VocStats", "SizeStats", "MapMetrics", "Counts", "MapInfo",
           "Headline", "COCO_STATS", "SIZE_STATS"]

Score = Optional[float]
# pycocotools' 12 summary numbers, in its order (-1 where an area range has no ground truth).
COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
# MapMetrics.sizes' keys and the COCO AP@[.5:.95] of each (in CocoStats).
SIZE_STATS = {"small": "APs", "medium": "APm", "large": "APl"}


@dataclass(frozen=True)
class Prf:
    """Pooled precision, recall and F1 of the detections scoring at least `confidence`."""

    confidence: float
    precision: Score
    recall: Score
    f1: Score


@dataclass(frozen=True)
class VocStats:
    per_class: dict[str, Score]


@dataclass(frozen=True)
class CocoStats:
    AP: Score
    AP50: Score
    AP75: Score
    APs: Score
    APm: Score
    APl: Score
    AR1: Score
    AR10: Score
    AR100: Score
    ARs: Score
    ARm: Score
    ARl: Score
    per_class: dict[str, Score]


@dataclass(frozen=True)
class SizeStats:
    """One COCO area range (object area in pixels² of the ORIGINAL image, not of the letterboxed
    input the model sees): its non-difficult ground truth, how many of them some detection
    matches at IoU 0.5 (COCO matching, any score the CSV holds, 100 per image and class) and the
    AP at IoU 0.5; ap50 is None without ground truth. Its AP@[.5:.95] is CocoStats' APs/APm/APl."""

    area: list[float]   # [lo, hi]
    ground_truth: int
    found50: int
    ap50: Score


@dataclass(frozen=True)
class MapMetrics(StrictJson):
    """reports/map/metrics.json: the scores, overall and per class (conventions in `MapInfo`)."""

    WRITER: ClassVar[str] = "the map stage (dvc repro) or `detpipe evaluate`"

    map50: Score
    min_overlap: float
    voc07: bool
    map50_95: Score
    voc: VocStats
    coco: CocoStats
    sizes: dict[str, SizeStats]   # small | medium | large (SIZE_STATS)
    at_confidence: Prf
    best_f1: Prf


@dataclass(frozen=True)
class Counts:
    images: int
    images_without_detections: int
    ground_truth: dict[str, int]
    difficult: int
    detections: dict[str, int]


@dataclass(frozen=True)
class PrfScores:
    precision: Score
    recall: Score
    f1: Score


@dataclass(frozen=True)
class MapInfo(StrictJson):
    """reports/map/info.json: how the scores were computed, what they were computed on, how long it took."""

    WRITER: ClassVar[str] = "the map stage (dvc repro) or `detpipe evaluate`"

    conventions: dict[str, str]
    counts: Counts
    per_class_ap50_coco: dict[str, Score]
    at_confidence_per_class: dict[str, PrfScores]
    warnings: list[str]
    seconds_voc: float
    seconds_coco: float
    seconds: float


@dataclass(frozen=True)
class Headline(StrictJson):
    """reports/metrics.json, DVC's metrics file: the test split's scores at a glance, the best val
    mAP50 of training and the overfitting verdict."""

    WRITER: ClassVar[str] = "the report stage (dvc repro)"

    map50: Score
    map50_95: Score
    precision: Score   # at predict.confidence, pooled over classes
    recall: Score
    f1: Score
    best_val_map50: Score
    verdict: str

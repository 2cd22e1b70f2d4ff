"""Detection metrics: VOC AP (devkit / Cartucho conventions), COCO stats (pycocotools
conventions), P/R/F1 against confidence and a confusion matrix. numpy only, so training imports it
cheaply; the report pages and plots are detpipe.reports.map_report's."""
from __future__ import annotations

from .coco import STAT_NAMES, CocoResult, coco_eval
from .confusion import confusion_matrix
from .curves import best_f1, prf_at, prf_curve
from .voc import VocResult, voc_map

__all__ = ["voc_map", "VocResult", "coco_eval", "CocoResult", "STAT_NAMES", "prf_at", "best_f1",
           "prf_curve", "confusion_matrix"]

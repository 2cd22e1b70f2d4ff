"""Detection metrics: VOC AP (devkit / Cartucho conventions), COCO stats (pycocotools
conventions), P/R/F1 against confidence and a confusion matrix. numpy only; the report writer
(`write_map_reports`) imports matplotlib lazily so training can import this cheaply."""
from __future__ import annotations

from .coco import STAT_NAMES, CocoResult, coco_eval
from .confusion import confusion_matrix
from .curves import best_f1, prf_at, prf_curve
from .voc import VocResult, voc_map


def write_map_reports(*args, **kwargs):
    """See `detpipe.reports.map_report.write_map_reports` (returns its `MapMetrics`)."""
    from ..reports.map_report import write_map_reports as _write
    return _write(*args, **kwargs)


__all__ = ["voc_map", "VocResult", "coco_eval", "CocoResult", "STAT_NAMES", "prf_at", "best_f1",
           "prf_curve", "confusion_matrix", "write_map_reports"]

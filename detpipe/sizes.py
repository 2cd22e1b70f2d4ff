"""COCO's object sizes by box area in original-image pixels: one definition for the mAP stage's
AP by size (detpipe.metrics.coco) and the split report's box-size counts (detpipe.reports.split_check)."""
from __future__ import annotations

# pycocotools' areaRng and areaRngLbl: each range includes both ends, so an area of exactly 32² is
# both small and medium there (a box on a shared end counts in both size rows of COCO's table).
AREA_RNG = ((0.0, 1e5 ** 2), (0.0, 32.0 ** 2), (32.0 ** 2, 96.0 ** 2), (96.0 ** 2, 1e5 ** 2))
AREA_NAMES = ("all", "small", "medium", "large")

"""The val split's scores after a training epoch (the val_* columns of the training history)."""
from __future__ import annotations

from .coco import coco_eval_flat
from .curves import best_f1
from .flat import from_lists
from .voc import voc_map_flat


def val_scores(gts: list[dict], dets: list[dict], num_classes: int) -> dict[str, float]:
    """VOC mAP50, COCO mAP50-95, and pooled precision and recall at the confidence that maximises
    pooled F1 (as Ultralytics' per-epoch P and R: no threshold setting reaches training, so changing
    predict.confidence retrains nothing), by the same functions and conventions as the map stage's
    test figures; all 0 without val images, where they say nothing.

    gts[i], dets[i]: per-image dicts as `voc.voc_map` takes them.
    """
    if not gts:
        return {"val_map50": 0.0, "val_map50_95": 0.0, "val_precision": 0.0, "val_recall": 0.0}
    data = from_lists(gts, dets)
    voc = voc_map_flat(data, num_classes, 0.5)
    at = best_f1(voc)
    return {"val_map50": float(voc.map), "val_map50_95": float(coco_eval_flat(data, num_classes).stats[0]),
            "val_precision": float(at["precision"]), "val_recall": float(at["recall"])}

"""Reading ground truth and detections made by any tool, and exporting to COCO JSON.

The txt folders are read by `txt.read_txt_dirs`; this module reads detpipe's detections CSV and
COCO JSON. Every error names the file and line (or entry) at fault, and the numbers of every
format go through the same checks (`validate.check_numbers`).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..artifacts.detections import NUMBERS, read_detections
from .flat import EvalData
from .validate import InputError, check_numbers

__all__ = ["InputError", "read_detections_csv", "read_coco_json", "coco_to_flat",
           "to_coco_json"]


def _float(token: str, where: str, what: str) -> float:
    try:
        return float(token)
    except (TypeError, ValueError):
        raise InputError(f"{where}: {what} {token!r} is not a number") from None


def read_detections_csv(path: str | Path, image_paths: list[str], class_names: list[str]) -> list[dict]:
    """detpipe's detections CSV (artifacts.detections) in the order of `image_paths`; images
    without rows have no detections. Its format errors are ArtifactErrors, its content errors
    (an image not in the split, an unknown class, a bad box) InputErrors."""
    index = {p: i for i, p in enumerate(image_paths)}
    classes = {n: i for i, n in enumerate(class_names)}
    images, names, values, lines = read_detections(path)
    for image, name, line in zip(images, names, lines):
        if image not in index:
            raise InputError(f"{path}:{line}: image {image!r} is not in the split")
        if name not in classes:
            raise InputError(f"{path}:{line}: unknown class {name!r}; classes: {', '.join(class_names)}")
    check_numbers(values, list(NUMBERS), lambda r: f"{path}:{lines[r]}", slice(1, 5), xywh=False)
    img = np.array([index[i] for i in images], np.int64)
    lab = np.array([classes[n] for n in names], np.int64)
    order = np.argsort(img, kind="stable")
    bounds = np.searchsorted(img[order], np.arange(len(image_paths) + 1))
    return [{"boxes": values[sel, 1:], "labels": lab[sel], "scores": values[sel, 0]}
            for sel in (order[a:b] for a, b in zip(bounds[:-1], bounds[1:]))]


def read_coco_json(gt_path: str | Path, det_path: str | Path) -> tuple[dict, list[str], list[str]]:
    """COCO ground truth (instances JSON) and results (list of {image_id, category_id, bbox,
    score}) as flat arrays for `coco_eval_arrays` (see `coco_to_flat` for the VOC side), the
    class names and warnings.

    Images and categories are taken in ascending id order, as pycocotools does; the annotation
    `area` and `iscrowd` fields are used as given. Results of a category absent from the ground
    truth are dropped, as pycocotools ignores them, with a counted warning.
    """
    gt = _load_json(gt_path)
    det = _load_json(det_path)
    if not isinstance(gt, dict) or not {"images", "annotations", "categories"} <= set(gt):
        raise InputError(f"{gt_path}: expected a COCO object with images, annotations and categories")
    if isinstance(det, dict) and "annotations" in det:
        det = det["annotations"]
    if not isinstance(det, list):
        raise InputError(f"{det_path}: expected a list of results {{image_id, category_id, bbox, score}}")
    try:
        img_ids = sorted({int(im["id"]) for im in gt["images"]})
        cats = sorted(gt["categories"], key=lambda c: int(c["id"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{gt_path}: every image and category needs an integer id ({exc!r})") from None
    g = _coco_anns(gt["annotations"], gt_path, "annotations", img_ids, cats, gt=True)
    d = _coco_anns(det, det_path, "entry ", img_ids, cats, gt=False)
    names = [str(c.get("name", c["id"])).replace(" ", "_") for c in cats]
    warnings = [f"{det_path}: {n} result(s) with category_id {c}, which is not among the ground "
                f"truth's categories ({', '.join(str(int(k['id'])) for k in cats)}): not scored"
                for c, n in d.pop("unknown").items()]
    return {"gt": g, "det": d, "num_images": len(img_ids), "num_classes": len(cats)}, names, warnings


def _load_json(path):
    try:
        with open(path, encoding="utf-8-sig") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None


def _coco_columns(anns: list, gt: bool) -> dict[str, np.ndarray] | None:
    """The fields of every entry as arrays in one pass per field; None if any entry is odd (the
    entry-by-entry reader then says which)."""
    try:
        out = {"img": np.array([a["image_id"] for a in anns]), "cat": np.array([a["category_id"] for a in anns]),
               "xywh": np.array([a["bbox"] for a in anns], np.float64).reshape(len(anns), 4)}
        if gt:
            out["area"] = np.array([a.get("area", 0.0) for a in anns], np.float64)
            out["has_area"] = np.array(["area" in a for a in anns], bool)
            out["crowd"] = np.array([a.get("iscrowd", 0) for a in anns])
        else:
            out["score"] = np.array([a["score"] for a in anns], np.float64)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    if len(anns) and not (out["img"].dtype.kind in "iu" and out["cat"].dtype.kind in "iu"):
        return None
    if gt and len(anns) and out["crowd"].dtype.kind not in "biu":
        return None
    return out


def _coco_entry(a, where: str, gt: bool) -> tuple:
    """One entry's fields, or an InputError saying what is wrong with it."""
    try:
        i, c, b = int(a["image_id"]), int(a["category_id"]), [float(v) for v in a["bbox"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{where}: needs image_id, category_id and a 4-number bbox ({exc!r})") from None
    if len(b) != 4:
        raise InputError(f"{where}: bbox must be [x, y, w, h], got {a['bbox']}")
    if gt:
        return i, c, b, _float(a.get("area", 0.0), where, "area"), "area" in a, bool(a.get("iscrowd", 0))
    if "score" not in a:
        raise InputError(f"{where}: needs a numeric score")
    return i, c, b, _float(a["score"], where, "score")


def _coco_anns(anns, path, what, img_ids, cats, gt: bool) -> dict:
    """Entries as flat arrays: image and category as indices, bbox xywh, area/crowd or score."""
    where = lambda n: f"{path}: {what}[{n}]"  # noqa: E731
    cols = _coco_columns(anns, gt)
    if cols is None:
        fields = list(zip(*[_coco_entry(a, where(n), gt) for n, a in enumerate(anns)])) or [[]] * (6 if gt else 4)
        cols = {"img": np.array(fields[0], np.int64), "cat": np.array(fields[1], np.int64),
                "xywh": np.array(fields[2], np.float64).reshape(-1, 4)}
        cols |= ({"area": np.array(fields[3], np.float64), "has_area": np.array(fields[4], bool),
                  "crowd": np.array(fields[5], bool)} if gt
                 else {"score": np.array(fields[3], np.float64)})
    ids = np.array(img_ids, np.int64)
    img = np.searchsorted(ids, cols["img"])
    bad = np.flatnonzero((img >= len(ids)) | (ids[np.minimum(img, len(ids) - 1)] != cols["img"]))
    if len(bad):
        raise InputError(f"{where(bad[0])}: image_id {int(cols['img'][bad[0]])} is not in the ground truth's images")
    cat_ids = np.array([int(c["id"]) for c in cats], np.int64)
    cat = np.searchsorted(cat_ids, cols["cat"])
    known = (cat < len(cat_ids)) & (cat_ids[np.minimum(cat, len(cat_ids) - 1)] == cols["cat"])
    if gt and not known.all():
        n = int(np.argmax(~known))
        raise InputError(f"{where(n)}: category_id {int(cols['cat'][n])} is not in categories")
    numbers = np.c_[cols["xywh"], cols["area"] if gt else cols["score"]]
    names = ["x", "y", "w", "h", "area" if gt else "score"]
    if gt:  # a missing area is the box's, as pycocotools' loadRes computes it
        numbers[:, 4] = np.where(cols["has_area"], cols["area"], cols["xywh"][:, 2] * cols["xywh"][:, 3])
    check_numbers(numbers, names, where, slice(0, 4), xywh=True)
    out = {"img": img[known], "cat": cat[known], "xywh": cols["xywh"][known]}
    if gt:
        return out | {"area": numbers[:, 4], "crowd": cols["crowd"].astype(bool)}
    unknown = np.unique(cols["cat"][~known], return_counts=True)
    return out | {"score": cols["score"][known], "unknown": dict(zip(unknown[0].tolist(), unknown[1].tolist()))}


def coco_to_flat(data: dict) -> EvalData:
    """Flat COCO arrays (from `read_coco_json`) as xyxy `EvalData` in image order (crowd =
    difficult; entries of one image keep their file order)."""
    sides = []
    for side in ("gt", "det"):
        s = data[side]
        order = np.argsort(s["img"], kind="stable")
        xywh = s["xywh"][order]
        sides.append((s["img"][order], np.c_[xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], s["cat"][order],
                      (s["crowd"] if side == "gt" else s["score"])[order]))
    (gi, gb, gl, gc), (di, db, dl, ds) = sides
    return EvalData(data["num_images"], gi, gb, gl, gc, di, db, dl, ds)


def to_coco_json(gts: list[dict], dets: list[dict], class_names: list[str]) -> tuple[dict, list[dict]]:
    """Export to pycocotools' formats: image ids 1..N in list order, annotation ids from 1 (0 is
    special in pycocotools), bbox [x1, y1, x2 - x1, y2 - y1], area = w * h, iscrowd = difficult."""
    images, anns, results = [], [], []
    for i, (g, d) in enumerate(zip(gts, dets), 1):
        images.append({"id": i})
        diff = g.get("difficult", np.zeros(len(g["labels"]), bool))
        for box, lab, dif in zip(np.asarray(g["boxes"]).reshape(-1, 4), g["labels"], diff):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(lab) + 1,
                         "bbox": [float(box[0]), float(box[1]), w, h], "area": w * h,
                         "iscrowd": int(bool(dif))})
        for box, lab, s in zip(np.asarray(d["boxes"]).reshape(-1, 4), d["labels"], d["scores"]):
            results.append({"image_id": i, "category_id": int(lab) + 1, "score": float(s),
                            "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]),
                                     float(box[3] - box[1])]})
    cats = [{"id": k + 1, "name": n} for k, n in enumerate(class_names)]
    return {"images": images, "annotations": anns, "categories": cats}, results

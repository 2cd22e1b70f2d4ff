"""Reading ground truth and detections made by any tool, and exporting to COCO JSON.

Every reader returns (gts, dets, class_names) in the per-image list format of `voc_map`, and
every error names the file and line (or entry) at fault.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from ..annotations import Record


class InputError(ValueError):
    """A ground-truth or detection file is missing or malformed; the message says where."""


def _empty_gt() -> dict:
    return {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, np.int64), "difficult": np.zeros(0, bool)}


def _float(token: str, where: str, what: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise InputError(f"{where}: {what} {token!r} is not a number") from None
    if not math.isfinite(value):
        raise InputError(f"{where}: {what} {token!r} is not finite")
    return value


def _check_box(box: list[float], where: str) -> None:
    if box[2] < box[0] or box[3] < box[1]:
        raise InputError(f"{where}: box {box} has x2 < x1 or y2 < y1 (expected x1 y1 x2 y2)")


def records_to_gts(records: list[Record]) -> list[dict]:
    """Annotation-line records (detpipe's split files) to the per-image ground-truth format."""
    return [{"boxes": r.boxes, "labels": r.labels, "difficult": r.difficult} for r in records]


def read_txt_dirs(gt_dir: str | Path, det_dir: str | Path,
                  class_names: list[str] | None = None) -> tuple[list[dict], list[dict], list[str]]:
    """The one-txt-per-image format (Cartucho/mAP): `class x1 y1 x2 y2 [difficult]` ground truth
    and `class score x1 y1 x2 y2` detections, paired by file name; images in sorted name order.
    Classes are `class_names` if given, else the sorted ground-truth classes."""
    gt_dir, det_dir = Path(gt_dir), Path(det_dir)
    for d in (gt_dir, det_dir):
        if not d.is_dir():
            raise InputError(f"{d}: not a directory")
    gt_files = {p.name: p for p in gt_dir.glob("*.txt")}
    det_files = {p.name: p for p in det_dir.glob("*.txt")}
    if not gt_files:
        raise InputError(f"{gt_dir}: no ground-truth .txt files")
    for missing, have, where in ((sorted(set(gt_files) - set(det_files)), gt_dir, det_dir),
                                 (sorted(set(det_files) - set(gt_files)), det_dir, gt_dir)):
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise InputError(f"{where / missing[0]}: missing, but {have / missing[0]} exists{more}; "
                             "every image needs both files (an empty file means no boxes)")
    raw_gt, raw_det = [], []
    for name in sorted(gt_files):
        raw_gt.append(_read_gt_txt(gt_files[name]))
        raw_det.append(_read_det_txt(det_files[name]))
    names = list(class_names) if class_names else sorted({c for rows in raw_gt for c, *_ in rows})
    index = {n: i for i, n in enumerate(names)}
    gts, dets = [], []
    for name, g_rows, d_rows in zip(sorted(gt_files), raw_gt, raw_det):
        for rows, path in ((g_rows, gt_files[name]), (d_rows, det_files[name])):
            for row in rows:
                if row[0] not in index and class_names:
                    raise InputError(f"{path}:{row[-1]}: unknown class {row[0]!r}; classes: {', '.join(names)}")
        # detection classes absent from the ground truth cannot be scored: they are dropped
        gts.append({"boxes": np.array([r[1] for r in g_rows], np.float64).reshape(-1, 4),
                    "labels": np.array([index[r[0]] for r in g_rows], np.int64),
                    "difficult": np.array([r[2] for r in g_rows], bool)})
        d_rows = [r for r in d_rows if r[0] in index]
        dets.append({"boxes": np.array([r[2] for r in d_rows], np.float64).reshape(-1, 4),
                     "labels": np.array([index[r[0]] for r in d_rows], np.int64),
                     "scores": np.array([r[1] for r in d_rows], np.float64)})
    return gts, dets, names


def _lines(path: Path):
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc})") from None
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            yield number, line.split()


def _read_gt_txt(path: Path) -> list[tuple]:
    rows = []
    for number, tok in _lines(path):
        where = f"{path}:{number}"
        if len(tok) not in (5, 6) or (len(tok) == 6 and tok[5].lower() not in ("difficult", "1", "0")):
            raise InputError(f"{where}: expected 'class x1 y1 x2 y2 [difficult]' "
                             f"(class names without spaces), got {' '.join(tok)!r}")
        box = [_float(t, where, "coordinate") for t in tok[1:5]]
        _check_box(box, where)
        rows.append((tok[0], box, len(tok) == 6 and tok[5].lower() in ("difficult", "1"), number))
    return rows


def _read_det_txt(path: Path) -> list[tuple]:
    rows = []
    for number, tok in _lines(path):
        where = f"{path}:{number}"
        if len(tok) != 6:
            raise InputError(f"{where}: expected 'class score x1 y1 x2 y2' "
                             f"(class names without spaces), got {' '.join(tok)!r}")
        score = _float(tok[1], where, "score")
        box = [_float(t, where, "coordinate") for t in tok[2:6]]
        _check_box(box, where)
        rows.append((tok[0], score, box, number))
    return rows


def read_detections_csv(path: str | Path, image_paths: list[str], class_names: list[str]) -> list[dict]:
    """detpipe's detections CSV (image, class, score, x1, y1, x2, y2) in the order of
    `image_paths`; images without rows have no detections."""
    index = {p: i for i, p in enumerate(image_paths)}
    classes = {n: i for i, n in enumerate(class_names)}
    rows: list[list] = [[] for _ in image_paths]
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        need = ["image", "class", "score", "x1", "y1", "x2", "y2"]
        missing = [c for c in need if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"{path}:1: missing column(s) {', '.join(missing)}; expected {','.join(need)}")
        for number, row in enumerate(reader, 2):
            where = f"{path}:{number}"
            if row["image"] not in index:
                raise InputError(f"{where}: image {row['image']!r} is not in the split")
            if row["class"] not in classes:
                raise InputError(f"{where}: unknown class {row['class']!r}; classes: {', '.join(class_names)}")
            box = [_float(row[c], where, c) for c in ("x1", "y1", "x2", "y2")]
            _check_box(box, where)
            rows[index[row["image"]]].append((classes[row["class"]], _float(row["score"], where, "score"), box))
    return [{"boxes": np.array([r[2] for r in rr], np.float64).reshape(-1, 4),
             "labels": np.array([r[0] for r in rr], np.int64),
             "scores": np.array([r[1] for r in rr], np.float64)} for rr in rows]


def read_coco_json(gt_path: str | Path, det_path: str | Path) -> tuple[dict, list[str]]:
    """COCO ground truth (instances JSON) and results (list of {image_id, category_id, bbox,
    score}) as flat arrays for `coco_eval_arrays` plus xyxy per-image lists for the VOC side.

    Images and categories are taken in ascending id order, as pycocotools does; the annotation
    `area` and `iscrowd` fields are used as given.
    """
    gt = _load_json(gt_path)
    det = _load_json(det_path)
    if not isinstance(gt, dict) or not {"images", "annotations", "categories"} <= set(gt):
        raise InputError(f"{gt_path}: expected a COCO object with images, annotations and categories")
    if isinstance(det, dict) and "annotations" in det:
        det = det["annotations"]
    if not isinstance(det, list):
        raise InputError(f"{det_path}: expected a list of results {{image_id, category_id, bbox, score}}")
    img_ids = sorted({int(im["id"]) for im in gt["images"]})
    cats = sorted(gt["categories"], key=lambda c: int(c["id"]))
    img_index = {i: n for n, i in enumerate(img_ids)}
    cat_index = {int(c["id"]): n for n, c in enumerate(cats)}
    g = _coco_anns(gt["annotations"], gt_path, "annotations", img_index, cat_index, gt=True)
    d = _coco_anns(det, det_path, "entry", img_index, cat_index, gt=False)
    names = [str(c.get("name", c["id"])).replace(" ", "_") for c in cats]
    return {"gt": g, "det": d, "num_images": len(img_ids), "num_classes": len(cats)}, names


def _load_json(path):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None


def _coco_anns(anns, path, what, img_index, cat_index, gt: bool) -> dict[str, np.ndarray]:
    img, cat, box, area, crowd, score = [], [], [], [], [], []
    for n, a in enumerate(anns):
        where = f"{path}: {what}[{n}]" if gt else f"{path}: entry [{n}]"
        try:
            i, c, b = int(a["image_id"]), int(a["category_id"]), [float(v) for v in a["bbox"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{where}: needs image_id, category_id and a 4-number bbox ({exc})") from None
        if i not in img_index:
            raise InputError(f"{where}: image_id {i} is not in the ground truth's images")
        if len(b) != 4:
            raise InputError(f"{where}: bbox must be [x, y, w, h], got {a['bbox']}")
        if c not in cat_index:
            if gt:
                raise InputError(f"{where}: category_id {c} is not in categories")
            continue  # pycocotools evaluates only the ground truth's categories
        img.append(img_index[i]); cat.append(cat_index[c]); box.append(b)
        if gt:
            area.append(float(a.get("area", b[2] * b[3])))
            crowd.append(bool(a.get("iscrowd", 0)))
        else:
            try:
                score.append(float(a["score"]))
            except (KeyError, TypeError, ValueError):
                raise InputError(f"{where}: needs a numeric score") from None
    out = {"img": np.array(img, np.int64), "cat": np.array(cat, np.int64),
           "xywh": np.array(box, np.float64).reshape(-1, 4)}
    if gt:
        out |= {"area": np.array(area, np.float64), "crowd": np.array(crowd, bool)}
    else:
        out["score"] = np.array(score, np.float64)
    return out


def coco_to_lists(data: dict) -> tuple[list[dict], list[dict]]:
    """Flat COCO arrays (from `read_coco_json`) to per-image xyxy lists (crowd = difficult)."""
    n = data["num_images"]
    gts, dets = [], []
    for side, out in (("gt", gts), ("det", dets)):
        s = data[side]
        xyxy = np.c_[s["xywh"][:, :2], s["xywh"][:, :2] + s["xywh"][:, 2:]]
        order = np.argsort(s["img"], kind="stable")
        bounds = np.searchsorted(s["img"][order], np.arange(n + 1))
        for i in range(n):
            sel = order[bounds[i]:bounds[i + 1]]
            item = {"boxes": xyxy[sel], "labels": s["cat"][sel]}
            item |= {"difficult": s["crowd"][sel]} if side == "gt" else {"scores": s["score"][sel]}
            out.append(item)
    return gts, dets


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

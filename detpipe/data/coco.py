"""COCO instances JSON (+ an image folder) as a source of the same raw items as VOC XML.

COCO boxes are [x, y, width, height]; they become xyxy as (x, y, x + width, y + height), so a
dataset exported from VOC with width = xmax - xmin produces the same annotation lines again.
`iscrowd` objects become difficult ones (neither counted nor penalised, as in the metrics).
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

from detpipe.data.checks import Issue
from detpipe.data.voc import RawItem, RawObject


class CocoError(ValueError):
    """The COCO file as a whole is unusable; the message says why and the fix."""


def _load(path: Path, shown: str) -> dict:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise CocoError(f"{shown}: COCO annotation file not found. Fix: set data.coco_json.") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CocoError(f"{shown}: not valid JSON ({exc}). Fix: re-export the instances file.") from None
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k) if isinstance(data, dict) else None, list)]
    if missing:
        raise CocoError(f"{shown}: no {', '.join(missing)} list; is this a COCO instances file "
                        "(e.g. instances_train2017.json)?")
    return data


def _object(ann: dict, categories: dict) -> RawObject:
    cid = ann.get("category_id")
    name = categories.get(cid, f"<category_id {cid}>")
    bbox = ann.get("bbox")
    crowd = bool(ann.get("iscrowd", 0))
    ok = (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float))
          and not isinstance(v, bool) and math.isfinite(v) for v in bbox))
    if not ok:
        return RawObject(name, None, crowd, f"annotation id {ann.get('id')}: bbox {bbox!r} is not [x, y, w, h]")
    x, y, w, h = (float(v) for v in bbox)
    is_float = any(not float(v).is_integer() for v in bbox)
    return RawObject(name, (x, y, x + w, y + h), crowd, None, is_float)


def coco_items(path: str | Path, shown: str | None = None) -> tuple[list[RawItem], list[str], list[Issue]]:
    """Read a COCO instances file into raw items (one per image, sorted by file name), the
    category names in id order, and per-annotation errors (unknown image ids, duplicate ids)."""
    shown = shown or str(path)
    data = _load(Path(path), shown)
    categories = {c.get("id"): str(c.get("name", "")) for c in data["categories"] if isinstance(c, dict)}
    images = {img.get("id"): img for img in data["images"] if isinstance(img, dict)}
    errors = [Issue(shown, "coco_duplicate_id", f"{shown}: image id {i!r} appears more than once; "
                    "Fix: give every image a unique id.") for i in _duplicates(data["images"])]
    by_image: dict = defaultdict(list)
    for ann in data["annotations"]:
        if not isinstance(ann, dict) or ann.get("image_id") not in images:
            errors.append(Issue(shown, "coco_unknown_image", f"{shown}: annotation "
                                f"{ann.get('id') if isinstance(ann, dict) else ann!r} refers to an image id "
                                "not in 'images'. Fix: remove it or add the image entry."))
            continue
        by_image[ann["image_id"]].append(_object(ann, categories))
    items = []
    for image_id, img in sorted(images.items(), key=lambda kv: (str(kv[1].get("file_name")), str(kv[0]))):
        w, h = img.get("width"), img.get("height")
        size = (int(w), int(h)) if isinstance(w, (int, float)) and isinstance(h, (int, float)) and w > 0 and h > 0 else None
        filename = str(img.get("file_name") or "").strip() or None
        items.append(RawItem(f"{shown}[image_id={image_id}]", filename, size, tuple(by_image[image_id])))
    names = [categories[k] for k in sorted(categories, key=str)]
    return items, names, errors


def _duplicates(images: list) -> list:
    seen, dup = set(), []
    for img in images:
        key = img.get("id") if isinstance(img, dict) else None
        if key in seen and key not in dup:
            dup.append(key)
        seen.add(key)
    return dup

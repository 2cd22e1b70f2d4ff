"""YOLO txt datasets (the Ultralytics / darknet layout) as a source of the same raw items as VOC XML.

Layout: images below any folder named `images` (`images/train/x.jpg`, `train/images/x.jpg`,
`images/x.jpg`); an image's label file is its path with the last `images` folder replaced by
`labels` and the extension by `.txt` (Ultralytics' rule), so `labels/train/x.txt`. An image without
a label file is a background image (as in Ultralytics), counted with a warning; a label file
without its image is an error. A label line is `class cx cy w h`, normalised to the image's
displayed size (after its EXIF orientation, as Ultralytics measures it), or `class x1 y1 x2 y2 ...`
(a segmentation polygon, whose bounding box is used).

Class indices are names from the dataset's own names file when it has one (`data.yaml`'s `names:`,
else `classes.txt`, in data.root), else from data.classes in order; either way the names then go
through the same class checks as VOC names (unknown names, data.ignore_classes). An index beyond
the names list becomes the name `<class index K>`, which the unknown-class check reports.

Pixel rule (`to_pixels`): x1 = (cx - w/2)·W and x2 = (cx + w/2)·W (y likewise with H) in float64,
rounded to 1/100 pixel. A VOC dataset converted to YOLO with 6 decimals reads back to its integer
VOC coordinates for images up to 6666 px a side: each written value is off by at most 0.5e-6, a
corner by at most 0.75e-6·W, below the 0.005 px that rounding absorbs.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from detpipe.data.images import IMAGE_EXTENSIONS
from detpipe.data.voc import RawItem, RawObject
from detpipe.data.walk import walk_files

PIXEL_DECIMALS = 2
NAMES_FILES = ("data.yaml", "classes.txt")
INDEX_PREFIX = "<class index "


class YoloError(ValueError):
    """The dataset as a whole cannot be read as YOLO txt; the message says why and the fix."""


class LabelError(ValueError):
    """One label file cannot be read (not UTF-8, unreadable); `kind` names the problem."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class YoloPair:
    """One image and its label file, as paths relative to the dataset root (POSIX); either may be
    None (a background image; a label file whose image is missing)."""

    image: str | None
    label: str | None


def index_name(k: int) -> str:
    return f"{INDEX_PREFIX}{k}>"


def _swap_last(rel: str, old: str, new: str) -> PurePosixPath | None:
    parts = list(PurePosixPath(rel).parts)
    folders = [i for i, p in enumerate(parts[:-1]) if p == old]
    if not folders:
        return None
    parts[folders[-1]] = new
    return PurePosixPath(*parts)


def label_path(image_rel: str) -> str | None:
    """Ultralytics' rule: the last `images` folder becomes `labels`, the extension `.txt`."""
    swapped = _swap_last(image_rel, "images", "labels")
    return str(swapped.with_suffix(".txt")) if swapped else None


def find_pairs(root: Path) -> tuple[list[YoloPair], list[str]]:
    """Every image below an `images` folder with its label file, plus label files below a
    `labels` folder that no image claims, sorted by image (then label) path; and the images
    outside any `images` folder (not part of the dataset: reported, not read)."""
    images, labels, outside = [], set(), []
    for path in walk_files(root):
        rel = path.relative_to(root).as_posix()
        folders = PurePosixPath(rel).parts[:-1]
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            (images if "images" in folders else outside).append(rel)
        elif path.suffix == ".txt" and "labels" in folders:
            labels.add(rel)
    if not images and not labels:
        raise YoloError(f"{root}: no images below an images/ folder and no labels/*.txt. Fix: set data.root to the "
                        "folder holding images/ and labels/ (e.g. images/train/*.jpg with labels/train/*.txt)")
    pairs, claimed = [], set()
    for rel in images:
        label = label_path(rel)
        claimed.add(label)
        pairs.append(YoloPair(rel, label if label in labels else None))
    pairs += [YoloPair(None, rel) for rel in sorted(labels - claimed)]
    return pairs, outside


def read_names(root: Path, classes: tuple[str, ...]) -> tuple[list[str], str]:
    """The index -> name list and where it came from: the dataset's data.yaml `names:` or
    classes.txt when present, else data.classes."""
    for name in NAMES_FILES:
        path = root / name
        if path.is_file():
            return _names_file(path), str(path)
    return list(classes), "data.classes"


def _names_file(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise YoloError(f"{path}: cannot read the class names ({exc}). Fix: make it UTF-8 text.") from None
    if path.suffix != ".yaml":
        return [ln.strip() for ln in text.splitlines() if ln.strip()]
    try:
        names = (yaml.safe_load(text) or {}).get("names")
    except (yaml.YAMLError, AttributeError) as exc:
        raise YoloError(f"{path}: not a YAML mapping with names: ({exc})") from None
    if isinstance(names, dict) and all(isinstance(k, int) for k in names):
        names = [names.get(i, index_name(i)) for i in range(max(names, default=-1) + 1)]
    if not isinstance(names, list) or not names:
        raise YoloError(f"{path}: no `names:` list (e.g. names: [cat, dog] or names: {{0: cat, 1: dog}}). "
                        "Fix: add it, or delete the file to take the names from data.classes")
    return [str(n) for n in names]


def _class(token: str, names: list[str]) -> str | None:
    try:
        value = float(token)
    except ValueError:
        return None
    if not value.is_integer() or value < 0:
        return None
    k = int(value)
    return names[k] if k < len(names) else index_name(k)


def parse_line(tokens: list[str], names: list[str], where: str) -> RawObject:
    """One label line as a RawObject with a normalised xyxy box, or None and the problem."""
    name = _class(tokens[0], names) if tokens else None
    if name is None:
        return RawObject(tokens[0] if tokens else "", None, problem=f"{where}: class {tokens[0]!r} is not a "
                         "whole number >= 0 (expected `class cx cy w h`)")
    numbers = []
    for t in tokens[1:]:
        try:
            numbers.append(float(t))
        except ValueError:
            numbers.append(math.nan)
    if not all(math.isfinite(v) for v in numbers):
        return RawObject(name, None, problem=f"{where}: non-numeric or infinite values {' '.join(tokens[1:])!r}")
    if len(numbers) == 4:
        cx, cy, w, h = numbers
        return RawObject(name, (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    if len(numbers) >= 6 and len(numbers) % 2 == 0:  # a polygon: its bounding box
        xs, ys = numbers[0::2], numbers[1::2]
        return RawObject(name, (min(xs), min(ys), max(xs), max(ys)))
    return RawObject(name, None, problem=f"{where}: {len(numbers)} numbers after the class; expected 4 "
                     "(`class cx cy w h`, normalised) or a polygon of x y pairs")


def read_labels(path: Path, shown: str, names: list[str]) -> tuple[RawObject, ...]:
    """Every non-blank line of a label file as a RawObject (problems kept, not raised)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise LabelError("unreadable_label", f"{shown}: not UTF-8 text. Fix: re-export the labels as text.") from None
    except OSError as exc:
        raise LabelError("unreadable_label", f"{shown}: cannot read ({exc.strerror}).") from None
    return tuple(parse_line(line.split(), names, f"{shown}:{n}") for n, line in enumerate(text.splitlines(), 1)
                 if line.strip())


def item(pair: YoloPair, root: Path, names: list[str], shown_root: str) -> RawItem:
    """The raw item of one pair (LabelError when its label file cannot be read); boxes stay
    normalised until the image size is known (`to_pixels`)."""
    label_shown = f"{shown_root}/{pair.label}" if pair.label else None
    objects = read_labels(root / pair.label, label_shown, names) if pair.label else ()
    return RawItem(label_shown or f"{shown_root}/{pair.image}", pair.image, None, objects, normalised=True)


def to_pixels(obj: RawObject, width: int, height: int) -> RawObject:
    """A normalised box in pixels of the displayed image (the rule in the module docstring)."""
    if obj.box is None:
        return obj
    x1, y1, x2, y2 = obj.box
    # + 0.0 turns a rounded -0.0 into 0.0, which the annotation line writes as 0
    box = tuple(round(v * s, PIXEL_DECIMALS) + 0.0 for v, s in ((x1, width), (y1, height), (x2, width), (y2, height)))
    return RawObject(obj.name, box, obj.difficult, obj.problem, False)


def missing_image_message(label_rel: str, shown_root: str) -> str:
    stem = (_swap_last(label_rel, "labels", "images") or PurePosixPath(label_rel)).with_suffix("")
    return (f"{shown_root}/{label_rel}: no image for this label file (looked for {shown_root}/{stem}.* with an "
            "image extension). Fix: add the image, or delete the label file.")

"""Walk a VOC, COCO or YOLO dataset, check every file, and build Records plus an honest report.

The report's books balance: images in = kept + skipped-with-reason, and objects in = kept +
skipped-with-reason. Problems that make training meaningless (unknown class names, missing
images, zero objects, files escaping the dataset …) are errors; everything else that changes or
drops data is a warning naming its file.
"""
from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from detpipe.artifacts.annotate_report import AnnotateReport, ClassCounts, ImageCounts, ObjectCounts
from detpipe.data.annotations import Record
from detpipe.data.checks import ImageIndex, Issue, ItemResult, check_item
from detpipe.data.coco import CocoError, coco_items
from detpipe.cpus import usable_cpus
from detpipe.data.images import PixelLimit
from detpipe.params import DataParams
from detpipe.data.voc import RawItem, XmlError, parse_voc
from detpipe.data.warning_groups import CLASS_NEVER_SEEN, nearest_name
from detpipe.data.yolo import (INDEX_PREFIX, LabelError, YoloError, YoloPair, find_pairs, label_path,
                                 missing_image_message, read_names)
from detpipe.data.yolo import item as yolo_item

BOX_PROBLEMS = ("bad_box", "degenerate_box", "outside_image")
MAX_LISTED = 10
PARALLEL_MIN_FILES = 2000


class DataError(ValueError):
    """The dataset cannot be used as configured; str() lists every problem and its fix."""


@dataclass
class DatasetResult:
    """Kept records (image paths relative to `base`), the report and the errors."""

    records: list[Record]
    report: AnnotateReport
    errors: list[Issue]


def display(path: str | Path, base: Path | None = None) -> str:
    """A path as shown to people and written to annotation lines: relative to `base` (the
    working directory) when beneath it, else absolute; always with forward slashes."""
    base = (base or Path.cwd()).absolute()
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(base).as_posix()
    except ValueError:
        return absolute.as_posix()


_STATE: dict = {}


def _init_worker(folder: Path, index: ImageIndex, verify: bool, base: Path, pixel_limit: PixelLimit,
                 extra: dict | None = None) -> None:
    _STATE.update(folder=folder, index=index, verify=verify, base=base, pixel_limit=pixel_limit, **(extra or {}))


def _voc_worker(xml_path: str) -> ItemResult:
    """Parse and check one VOC XML file (runs in a worker process or inline)."""
    source = display(xml_path, _STATE["base"])
    try:
        raw = parse_voc(xml_path, source)
    except XmlError as exc:
        # The same-stem image belongs to this broken file: not also reported as unannotated.
        same_stem = _STATE["index"].by_lower_stem.get(Path(xml_path).stem.lower())
        image = str(_STATE["folder"] / same_stem[0]) if same_stem else None
        return ItemResult(source, image=image, error=Issue(source, exc.kind, str(exc)))
    return check_item(raw, _STATE["folder"], _STATE["index"], Path(xml_path).stem, _STATE["verify"],
                      pixel_limit=_STATE["pixel_limit"])


def _raw_worker(raw: RawItem) -> ItemResult:
    stem = Path(raw.filename).stem if raw.filename else ""
    return check_item(raw, _STATE["folder"], _STATE["index"], stem, _STATE["verify"], pixel_limit=_STATE["pixel_limit"])


def _yolo_worker(pair: YoloPair) -> ItemResult:
    """Read one YOLO label file and check it with its image (runs in a worker process or inline)."""
    root, shown = _STATE["folder"], _STATE["yolo_root"]
    try:
        raw = yolo_item(pair, root, _STATE["names"], shown)
    except LabelError as exc:
        source = f"{shown}/{pair.label}"
        return ItemResult(source, image=str(root / pair.image) if pair.image else None,
                          error=Issue(source, exc.kind, str(exc)))
    if pair.image is None:
        return ItemResult(raw.source, objects_in=len(raw.objects),
                          error=Issue(raw.source, "missing_image", missing_image_message(pair.label, shown)))
    result = check_item(raw, root, _STATE["index"], Path(pair.image).stem, _STATE["verify"],
                        pixel_limit=_STATE["pixel_limit"])
    if pair.label is None and result.error is None:
        result.warnings.append(Issue(raw.source, "no_label_file", f"{raw.source}: no label file "
                                     f"{shown}/{label_path(pair.image)}; used as a background image (no objects), "
                                     "as Ultralytics does. Fix: add its labels, or an empty file to say it is background."))
    return result


def run_items(func: Callable, items: Sequence, state: tuple, workers: int = 0) -> list[ItemResult]:
    """Apply a worker to every item, in order, with a progress bar; a process pool when there are
    many files (parsing + image decoding is CPU-bound, so threads would not help)."""
    workers = workers or (min(usable_cpus(), 8) if len(items) >= PARALLEL_MIN_FILES else 1)
    bar = dict(total=len(items), desc="check", unit="file", disable=len(items) < 500, mininterval=1.0)
    if workers <= 1:
        _init_worker(*state)
        return [func(item) for item in tqdm(items, **bar)]
    chunk = max(16, len(items) // (workers * 8))
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=state) as pool:
        return list(tqdm(pool.map(func, items, chunksize=chunk), **bar))


@dataclass
class Tally:
    """Running counts while the item results are folded into records."""

    classes: tuple[str, ...]
    ignore: tuple[str, ...] = ()
    skip_bad: bool = False
    images_in: int = 0
    images_skipped: Counter = field(default_factory=Counter)
    objects_in: int = 0
    objects_skipped: Counter = field(default_factory=Counter)
    class_objects: Counter = field(default_factory=Counter)
    class_images: Counter = field(default_factory=Counter)
    class_difficult: Counter = field(default_factory=Counter)
    modes: Counter = field(default_factory=Counter)
    without_objects: list[str] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    errors: list[Issue] = field(default_factory=list)
    unknown: dict[str, list[str]] = field(default_factory=dict)
    ignored: Counter = field(default_factory=Counter)
    used: dict[str, str] = field(default_factory=dict)

    def skip(self, result: ItemResult, issue: Issue, error: bool = False) -> None:
        """Skip a whole item; its objects are counted as skipped with the image's reason."""
        self.images_skipped[issue.kind] += 1
        if result.objects_in:
            self.objects_skipped[f"image_skipped:{issue.kind}"] += result.objects_in
        (self.errors if error else self.warnings).append(issue)


def _labels(t: Tally, r: ItemResult) -> tuple[list[int], list[int]]:
    """Map class names to indices; returns (kept object positions, labels)."""
    keep, labels = [], []
    lookup = {name: i for i, name in enumerate(t.classes)}
    for k, name in enumerate(r.names):
        stripped = name.strip()
        if stripped != name:
            t.warnings.append(Issue(r.source, "class_whitespace", f"{r.source}: class name {name!r} has "
                                    f"surrounding whitespace; read as {stripped!r}."))
        if stripped in lookup:
            keep.append(k)
            labels.append(lookup[stripped])
        elif stripped in t.ignore:
            t.objects_skipped["ignored_class"] += 1
            t.ignored[stripped] += 1
        else:
            t.unknown.setdefault(stripped, []).append(r.source)
            t.objects_skipped["unknown_class"] += 1
    return keep, labels


def fold(t: Tally, r: ItemResult, base: Path) -> Record | None:
    """Fold one item result into the tally; returns its Record when the image is kept."""
    t.images_in += 1
    t.objects_in += r.objects_in
    key = os.path.normcase(os.path.normpath(r.image)) if r.image else None
    if r.error is not None:
        if key:
            t.used.setdefault(key, r.source)
        t.skip(r, r.error, error=not t.skip_bad)
        return None
    if key in t.used:
        t.skip(r, Issue(r.source, "duplicate_image", f"{r.source}: names the same image as "
                        f"{t.used[key]}; skipped. Fix: one annotation file per image."))
        return None
    t.used[key] = r.source
    t.warnings += r.warnings
    t.objects_skipped.update(r.skipped)
    keep, labels = _labels(t, r)
    if not keep and any(r.skipped[k] for k in BOX_PROBLEMS):
        t.images_skipped["all_objects_invalid"] += 1
        t.warnings.append(Issue(r.source, "all_objects_invalid", f"{r.source}: every box was invalid; "
                                "image skipped rather than taught as background."))
        return None
    return _record(t, r, keep, labels, base)


def _record(t: Tally, r: ItemResult, keep: list[int], labels: list[int], base: Path) -> Record:
    path = display(r.image, base)
    t.modes[r.mode] += 1
    if not keep:
        t.without_objects.append(path)
    for k, label in zip(keep, labels):
        t.class_objects[t.classes[label]] += 1
        t.class_difficult[t.classes[label]] += int(r.difficult[k])
    for label in set(labels):
        t.class_images[t.classes[label]] += 1
    boxes = np.array([r.boxes[k] for k in keep], dtype=np.float64).reshape(-1, 4)
    return Record(path, boxes, np.array(labels, dtype=np.int64),
                  np.array([r.difficult[k] for k in keep], dtype=bool))


def _hint(name: str, classes: Sequence[str]) -> str:
    """What an unknown label name probably is: a YOLO index past the names, or a typo."""
    if name.startswith(INDEX_PREFIX):
        return (f"\n      a YOLO class index past the {len(classes)} names (0..{len(classes) - 1}): add the "
                "missing names (data.classes, or the dataset's data.yaml / classes.txt) or fix the label lines")
    near = nearest_name(name, classes)
    if near is None:
        return ""
    if "".join(near.split()).lower() == "".join(name.split()).lower():
        return (f"\n      differs from configured {near!r} only in case/whitespace (names are "
                "case-sensitive)")
    return f"\n      did you mean {near!r}? (a typo in the labels or in data.classes)"


def unknown_class_error(unknown: dict[str, list[str]], classes: Sequence[str]) -> Issue:
    """One error listing every unknown name with up to MAX_LISTED files, and the configured classes."""
    lines = [f"{len(unknown)} class name(s) in the labels are not in data.classes "
             f"[{', '.join(classes)}]:"]
    for name, files in sorted(unknown.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        uniq = list(dict.fromkeys(files))
        more = f" … and {len(uniq) - MAX_LISTED} more" if len(uniq) > MAX_LISTED else ""
        lines.append(f"  {name!r}: {len(files)} object(s) in {len(uniq)} file(s): "
                     f"{', '.join(uniq[:MAX_LISTED])}{more}{_hint(name, classes)}")
    lines.append("  Fix: add each name to data.classes in params.yaml, list it in data.ignore_classes "
                 "to drop those objects knowingly, or correct the annotation files.")
    return Issue("(dataset)", "unknown_class", "\n".join(lines))


def _orphans(t: Tally, index: ImageIndex, folder: Path, base: Path) -> None:
    """Images nobody annotated are counted as skipped, and same-stem images flagged."""
    for name in index.by_lower_name.values():
        key = os.path.normcase(os.path.normpath(str(folder / name)))
        if key not in t.used:
            shown = display(folder / name, base)
            t.images_in += 1
            t.images_skipped["no_annotation"] += 1
            t.warnings.append(Issue(shown, "no_annotation", f"{shown}: image has no annotation; skipped "
                                    "(unlabelled is not background). Fix: add an annotation without "
                                    "<object> to use it as a background image."))
    for stem, names in index.by_lower_stem.items():
        if len(names) > 1:
            shown = display(folder / names[0], base)
            t.warnings.append(Issue(shown, "duplicate_stem", f"{display(folder, base)}: images {names} "
                                    f"share the stem {stem!r}; an annotation found by stem is ambiguous. "
                                    "Fix: rename or remove one."))


def _dataset_checks(t: Tally) -> None:
    """Dataset-wide outcomes: unknown names, empty classes, nothing to train on."""
    if t.unknown:
        t.errors.append(unknown_class_error(t.unknown, t.classes))
    seen = {**{n: len(f) for n, f in t.unknown.items()}, **t.ignored}  # label names that were not kept
    for name in t.classes:
        if not t.class_objects[name]:
            near = nearest_name(name, seen)
            hint = (f" The labels use {near!r} ({seen[near]} object(s), not kept): did you mean {near!r}?"
                    if near else "")
            t.warnings.append(Issue("(dataset)", CLASS_NEVER_SEEN, f"class {name!r} has no kept "
                                    f"objects; the model cannot learn it.{hint} Fix: label some, correct the "
                                    "name, or remove it from data.classes."))
    if not sum(t.class_objects.values()):
        t.errors.append(Issue("(dataset)", "no_objects", f"the dataset has no usable objects "
                              f"({t.images_in} images, {t.objects_in} objects in, skipped: "
                              f"{dict(t.objects_skipped) or 'none'}); training would learn nothing. "
                              "Fix: check data.root, data.source and data.classes."))


def build_report(t: Tally, records: list[Record], source: dict) -> AnnotateReport:
    """The annotate report; raises RuntimeError if the books do not balance (a bug, not bad data)."""
    kept_objects = sum(len(r) for r in records)
    images_ok = t.images_in == len(records) + sum(t.images_skipped.values())
    objects_ok = t.objects_in == kept_objects + sum(t.objects_skipped.values())
    if not (images_ok and objects_ok):
        raise RuntimeError(f"internal accounting error: images {images_ok}, objects {objects_ok}")
    return AnnotateReport(
        source=source,
        classes=list(t.classes),
        images=ImageCounts(in_=t.images_in, kept=len(records), skipped=dict(sorted(t.images_skipped.items())),
                           without_objects=len(t.without_objects)),
        objects=ObjectCounts(in_=t.objects_in, kept=kept_objects, skipped=dict(sorted(t.objects_skipped.items()))),
        per_class={c: ClassCounts(objects=t.class_objects[c], images=t.class_images[c],
                                  difficult=t.class_difficult[c]) for c in t.classes},
        images_without_objects=t.without_objects,
        image_modes=dict(sorted(t.modes.items())),
        warning_counts=dict(sorted(Counter(w.kind for w in t.warnings).items())),
        warnings=[vars(w) for w in t.warnings],
        errors=[vars(e) for e in t.errors],
    )


def _finish(data: DataParams, results: list[ItemResult], index: ImageIndex, folder: Path, base: Path,
            source: dict, extra_errors: Sequence[Issue] = (), extra_warnings: Sequence[Issue] = ()) -> DatasetResult:
    t = Tally(tuple(data.classes), tuple(data.ignore_classes), data.skip_bad_files)
    t.errors += list(extra_errors)
    t.warnings += list(extra_warnings)
    records = [rec for rec in (fold(t, r, base) for r in results) if rec is not None]
    _orphans(t, index, folder, base)
    _dataset_checks(t)
    return DatasetResult(records, build_report(t, records, source), t.errors)


def _folder(path: Path, what: str, fix: str) -> Path:
    if not path.is_dir():
        raise DataError(f"{path}: {what} folder not found. Fix: {fix}")
    return path


def check_voc(data: DataParams, base: Path | None = None, workers: int | None = None) -> DatasetResult:
    """Check a VOC dataset: <root>/Annotations/*.xml with images in <root>/JPEGImages (or data.images)."""
    base = base or Path.cwd()
    root = Path(data.root)
    fix = "set data.root to the folder holding Annotations/ and JPEGImages/ (e.g. VOCdevkit/VOC2007)."
    ann_dir = _folder(root / "Annotations", "annotation", fix)
    folder = _folder(Path(data.images) if data.images else root / "JPEGImages", "image", fix)
    files = sorted(p for p in ann_dir.iterdir() if p.is_file())
    xmls = [str(p) for p in files if p.suffix.lower() == ".xml"]
    index = ImageIndex.scan(folder)
    limit = PixelLimit(data.max_image_pixels)
    results = run_items(_voc_worker, xmls, (folder, index, data.verify_images, base, limit),
                        data.workers if workers is None else workers)
    source = {"type": "voc", "annotations": display(ann_dir, base), "images": display(folder, base)}
    not_xml = [Issue(display(p, base), "not_xml", f"{display(p, base)}: not an .xml file; ignored.")
               for p in files if p.suffix.lower() != ".xml"]
    return _finish(data, results, index, folder, base, source, extra_warnings=not_xml)


def check_coco(data: DataParams, base: Path | None = None, workers: int | None = None) -> DatasetResult:
    """Check a COCO source: the instances JSON `data.coco_json` and the image folder `data.images`."""
    base = base or Path.cwd()
    if not data.coco_json:
        raise DataError("data.source is coco but data.coco_json is empty. Fix: set it to the instances JSON.")
    folder = _folder(Path(data.images or Path(data.root) / "images"), "image",
                     "set data.images to the folder holding the COCO images.")
    try:
        items, _, errors = coco_items(data.coco_json, display(data.coco_json, base))
    except CocoError as exc:
        raise DataError(str(exc)) from None
    index = ImageIndex.scan(folder)
    limit = PixelLimit(data.max_image_pixels)
    results = run_items(_raw_worker, items, (folder, index, data.verify_images, base, limit),
                        data.workers if workers is None else workers)
    source = {"type": "coco", "annotations": display(data.coco_json, base), "images": display(folder, base)}
    return _finish(data, results, index, folder, base, source, errors)


def check_yolo(data: DataParams, base: Path | None = None, workers: int | None = None) -> DatasetResult:
    """Check a YOLO txt dataset below data.root (images/... + labels/..., see detpipe.yolo_source)."""
    base = base or Path.cwd()
    root = _folder(Path(data.root), "dataset", "set data.root to the folder holding images/ and labels/.")
    shown = display(root, base)
    try:
        pairs, outside = find_pairs(root)
        names, names_from = read_names(root, tuple(data.classes))
    except YoloError as exc:
        raise DataError(str(exc)) from None
    index = ImageIndex({}, {})  # YOLO pairs images and labels by path, never by a fallback
    extra = {"names": names, "yolo_root": shown}
    limit = PixelLimit(data.max_image_pixels)
    results = run_items(_yolo_worker, pairs, (root, index, data.verify_images, base, limit, extra),
                        data.workers if workers is None else workers)
    ignored = [Issue(f"{shown}/{rel}", "outside_images_folder", f"{shown}/{rel}: not below an images/ folder, so "
                     "not part of the YOLO dataset; ignored.") for rel in outside]
    source = {"type": "yolo", "root": shown, "class_names_from": display(names_from, base)
              if names_from != "data.classes" else names_from}
    return _finish(data, results, index, root, base, source, extra_warnings=ignored)


CHECKERS = {"voc": check_voc, "coco": check_coco, "yolo": check_yolo}  # one per params.DataSource


def check_dataset(data: DataParams, base: Path | None = None, workers: int | None = None) -> DatasetResult:
    """Check the dataset params describe (data.source voc, coco or yolo)."""
    return CHECKERS[data.source](data, base, workers)


def format_errors(errors: Sequence[Issue], limit: int = MAX_LISTED) -> str:
    """Errors grouped by kind, at most `limit` messages per kind (the report lists all)."""
    kinds: dict[str, list[Issue]] = {}
    for e in errors:
        kinds.setdefault(e.kind, []).append(e)
    lines = [f"{len(errors)} data error(s):"]
    for kind, group in kinds.items():
        lines.append(f"[{kind}] {len(group)} file(s)" if len(group) > 1 else f"[{kind}]")
        lines += [f"  {e.message}" for e in group[:limit]]
        if len(group) > limit:
            lines.append(f"  … and {len(group) - limit} more {kind} errors (all listed in the report)")
    return "\n".join(lines)


def summary_line(report: AnnotateReport) -> str:
    """One line of counts for stdout."""
    im, ob = report.images, report.objects
    skipped = lambda d: ", ".join(f"{k} {v}" for k, v in d.items()) or "none"  # noqa: E731
    return (f"images in {im.in_}, kept {im.kept} ({im.without_objects} without objects), "
            f"skipped {sum(im.skipped.values())} [{skipped(im.skipped)}]; objects in {ob.in_}, "
            f"kept {ob.kept}, skipped {sum(ob.skipped.values())} [{skipped(ob.skipped)}]; "
            f"{len(report.warnings)} warnings, {len(report.errors)} errors")

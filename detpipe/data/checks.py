"""Per-image checks shared by every source: resolve the image safely, inspect it, clean the boxes.

Each check returns what it kept plus an `Issue` for everything it changed or dropped, so the
caller can prove nothing vanished: objects in = kept + skipped-with-reason.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np

from detpipe.data.images import (DEFAULT_LIMIT, IMAGE_EXTENSIONS, ImageCheckError, ImageInfo, PixelLimit,
                                 exif_transform_boxes, inspect_image)
from detpipe.data.voc import RawItem, RawObject
from detpipe.data.yolo import to_pixels


@dataclass(frozen=True)
class Issue:
    """A warning or error about one file: `kind` is a short name, `message` says what and the fix."""

    file: str
    kind: str
    message: str


class ItemError(ValueError):
    """A per-file error (missing image, unsafe filename, bad image …)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class ItemResult:
    """The outcome of checking one annotation item."""

    source: str
    image: str | None = None
    mode: str | None = None
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    difficult: list[bool] = field(default_factory=list)
    objects_in: int = 0
    skipped: Counter = field(default_factory=Counter)
    warnings: list[Issue] = field(default_factory=list)
    error: Issue | None = None


@dataclass(frozen=True)
class ImageIndex:
    """The image folder's top-level files, for case-insensitive and by-stem fallbacks."""

    by_lower_name: dict[str, str]
    by_lower_stem: dict[str, list[str]]

    @classmethod
    def scan(cls, folder: Path) -> "ImageIndex":
        names = sorted(e.name for e in os.scandir(folder) if e.is_file()
                       and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS) if folder.is_dir() else []
        stems: dict[str, list[str]] = {}
        for name in names:
            stems.setdefault(os.path.splitext(name)[0].lower(), []).append(name)
        return cls({n.lower(): n for n in names}, stems)


def safe_join(folder: Path, filename: str, source: str) -> Path:
    """Join a file name from an annotation to the image folder, refusing anything that could
    leave it (absolute paths, drive letters, `..`). Lexical on purpose: DVC may symlink files."""
    parts = PureWindowsPath(filename).parts if "\\" in filename else PurePosixPath(filename).parts
    if (PurePosixPath(filename).is_absolute() or PureWindowsPath(filename).is_absolute()
            or PureWindowsPath(filename).drive or ".." in parts or "\x00" in filename):
        raise ItemError("unsafe_filename", f"{source}: image file name {filename!r} points outside "
                        f"the image folder; refused, nothing read. Fix: write the bare file name "
                        f"of an image inside {folder}.")
    return folder.joinpath(*[p for p in parts if p not in ("", ".")])


def _fallback(stem: str, index: ImageIndex) -> str | None:
    """The one image sharing `stem` (preferring .jpg) or None."""
    found = index.by_lower_stem.get(stem.lower(), [])
    return sorted(found, key=lambda n: (not n.lower().endswith(".jpg"), n))[0] if found else None


def resolve_image(raw: RawItem, folder: Path, index: ImageIndex, stem: str) -> tuple[Path, list[Issue]]:
    """Find the image an item names; fall back to a case-insensitive or same-stem match with a
    warning; raise ItemError when there is none."""
    if raw.filename:
        path = safe_join(folder, raw.filename, raw.source)
        if path.is_file():
            return path, []
        actual = index.by_lower_name.get(raw.filename.lower())
        if actual:
            return folder / actual, [Issue(raw.source, "filename_case", f"{raw.source}: image "
                                           f"{raw.filename!r} found as {actual!r} (different case); used it.")]
    for candidate_stem in dict.fromkeys([stem] + ([Path(raw.filename).stem] if raw.filename else [])):
        actual = _fallback(candidate_stem, index)
        if actual:
            said = f"names {raw.filename!r}" if raw.filename else "has no <filename>"
            return folder / actual, [Issue(raw.source, "filename_mismatch", f"{raw.source}: {said}; "
                                           f"used {actual!r} (same stem). Fix: correct the file name.")]
    raise ItemError("missing_image", f"{raw.source}: image {raw.filename or stem + '.*'!r} not found in "
                    f"{folder} (also tried {stem}.* and other cases). Fix: add the image, correct "
                    "<filename>, or delete the annotation.")


def clean_box(obj: RawObject, info: ImageInfo, source: str) -> tuple[tuple | None, str | None, Issue | None]:
    """Clip one box to the image. Returns (box, dropped_reason, warning)."""
    if obj.box is None:
        return None, "bad_box", Issue(source, "bad_box", f"{source}: object {obj.name!r}: {obj.problem}; dropped.")
    x1, y1, x2, y2 = obj.box
    if x2 <= x1 or y2 <= y1:
        return None, "degenerate_box", Issue(source, "degenerate_box", f"{source}: object {obj.name!r} "
                                             f"box {obj.box} has xmax <= xmin or ymax <= ymin; dropped.")
    cx1, cy1 = min(max(x1, 0.0), info.width), min(max(y1, 0.0), info.height)
    cx2, cy2 = min(max(x2, 0.0), info.width), min(max(y2, 0.0), info.height)
    if cx2 <= cx1 or cy2 <= cy1:
        return None, "outside_image", Issue(source, "outside_image", f"{source}: object {obj.name!r} box "
                                            f"{obj.box} lies outside the {info.width}x{info.height} image; dropped.")
    if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
        return (cx1, cy1, cx2, cy2), None, Issue(source, "clipped", f"{source}: object {obj.name!r} box "
                                                 f"{obj.box} partly outside the {info.width}x{info.height} image; clipped.")
    return (x1, y1, x2, y2), None, None


def orient_objects(raw: RawItem, info: ImageInfo) -> tuple[list[RawObject], list[Issue]]:
    """Bring boxes into the displayed frame (see detpipe.data.images) and compare the declared size.
    Normalised (YOLO) boxes are fractions of the displayed image: scaled, never rotated."""
    if raw.normalised:
        return [to_pixels(o, info.width, info.height) for o in raw.objects], []
    shown, stored = (info.width, info.height), (info.stored_width, info.stored_height)
    issues, objects = [], list(raw.objects)
    if raw.size is not None and raw.size not in (shown, stored):
        issues.append(Issue(raw.source, "size_mismatch", f"{raw.source}: <size> says {raw.size[0]}x"
                            f"{raw.size[1]}, the image is {shown[0]}x{shown[1]}; trusting the image "
                            "(boxes not rescaled). Fix: re-save the annotation."))
    if info.orientation == 1:
        return objects, issues
    if raw.size == shown and shown != stored:
        issues.append(Issue(raw.source, "exif_rotated", f"{raw.source}: EXIF orientation "
                            f"{info.orientation}; <size> shows boxes drawn on the rotated image, used as is."))
        return objects, issues
    boxes = np.array([o.box for o in objects if o.box is not None], dtype=np.float64).reshape(-1, 4)
    moved = iter(exif_transform_boxes(boxes, info.orientation, *stored).tolist())
    objects = [RawObject(o.name, tuple(next(moved)), o.difficult, o.problem, o.float_coords)
               if o.box is not None else o for o in objects]
    issues.append(Issue(raw.source, "exif_rotated", f"{raw.source}: EXIF orientation {info.orientation}; "
                        "pixels and boxes rotated together to the displayed frame."))
    return objects, issues


def check_item(raw: RawItem, folder: Path, index: ImageIndex, stem: str, verify: bool = True,
               pixel_limit: PixelLimit = DEFAULT_LIMIT) -> ItemResult:
    """Resolve, inspect and clean one item. Class names are checked later, across the dataset."""
    result = ItemResult(raw.source, objects_in=len(raw.objects))
    try:
        path, result.warnings = resolve_image(raw, folder, index, stem)
        result.image = str(path)
        info = inspect_image(path, verify, pixel_limit)
    except ItemError as exc:
        result.error = Issue(raw.source, exc.kind, str(exc))
        return result
    except ImageCheckError as exc:  # exc.kind: bad_image, or image_too_large (refused from its header)
        result.error = Issue(raw.source, exc.kind, f"{raw.source}: image {path.name!r}: {exc.reason}. "
                             f"Fix: {exc.fix}.")
        return result
    result.mode = info.mode
    if info.mode not in ("RGB",):
        result.warnings.append(Issue(str(path), "converted_mode", f"{path.name}: mode {info.mode} converted to RGB."))
    objects, issues = orient_objects(raw, info)
    result.warnings += issues
    for obj in objects:
        box, reason, issue = clean_box(obj, info, raw.source)
        if issue:
            result.warnings.append(issue)
        if reason:
            result.skipped[reason] += 1
            continue
        if obj.float_coords:
            result.warnings.append(Issue(raw.source, "float_coordinates", f"{raw.source}: object "
                                         f"{obj.name!r} has fractional coordinates; kept as written."))
        result.boxes.append(box)
        result.names.append(obj.name)
        result.difficult.append(obj.difficult)
    return result

"""What `detpipe predict SOURCE` reads: an image, a folder (recursively), a glob, a list file, a
video file or a camera index, as a stream of RGB frames.

Folders and globs take every file with an image extension (any case) and count the rest as
skipped; they follow symlinked folders but visit each real file once (detpipe.walk). A list file
(`.txt`) names one image per line: detpipe's annotation lines (`data/splits/test.txt`, whose boxes
are then the ground truth) or plain paths, as Ultralytics' `source=list.txt`. A file that cannot
be decoded is reported and skipped, never fatal. Video files and cameras are read with OpenCV
(opencv-python-headless), which also writes the annotated video.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..data.annotations import Record, parse_line
from ..data.images import DEFAULT_LIMIT, IMAGE_EXTENSIONS, ImageCheckError, PixelLimit, load_rgb
from ..data.walk import glob_files, split_glob, walk_files

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")
OPENCV_HINT = ("video files and cameras need OpenCV: pip install opencv-python-headless "
               "(it is in requirements.txt)")


class SourceError(ValueError):
    """SOURCE cannot be read at all; the message says why."""


@dataclass
class Frame:
    """One image or video frame: `name` is its path relative to the source (frames: stem_000123)."""

    name: str
    rgb: np.ndarray
    path: Path | None = None
    index: int = 0


@dataclass
class Source:
    """An iterable of Frames; `skipped` (non-image files) and `unreadable` (path, reason) fill as
    it goes, `total` is the expected number of frames (None for a camera)."""

    kind: str                      # image | folder | glob | list | video | camera
    spec: str
    files: list[Path] = field(default_factory=list)
    base: Path | None = None
    skipped: list[Path] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    total: int | None = None
    fps: float = 30.0
    max_frames: int = 0
    truth: dict[Path, Record] | None = None   # list files with boxes: the ground truth per file
    pixel_limit: PixelLimit = DEFAULT_LIMIT    # images above it are skipped, refused from their header
    _capture: object = None

    def __iter__(self) -> Iterator[Frame]:
        if self.kind in ("video", "camera"):
            yield from self._frames()
            return
        for path in self.files:
            try:
                rgb = load_rgb(path, self.pixel_limit)
            except ImageCheckError as exc:  # any decoder error, or too large: report the file, go on
                self.unreadable.append((path, f"{exc.reason}. Fix: {exc.fix}"))
                continue
            name = path.relative_to(self.base).as_posix() if self.base else path.name
            yield Frame(name, rgb, path)

    def _frames(self) -> Iterator[Frame]:
        cap = self._capture
        stem = Path(self.spec).stem if self.kind == "video" else f"camera{self.spec}"
        i = 0
        try:
            while not self.max_frames or i < self.max_frames:
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    break
                yield Frame(f"{stem}_{i:06d}", np.ascontiguousarray(bgr[..., ::-1]), None, i)
                i += 1
        finally:
            cap.release()

    def input_paths(self) -> list[Path]:
        return list(self.files) + ([Path(self.spec)] if self.kind == "video" else [])


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _split(paths: list[Path], exclude: Path | None) -> tuple[list[Path], list[Path]]:
    files, skipped = [], []
    for p in sorted(paths):
        if exclude is not None and exclude in p.resolve().parents:
            continue  # earlier results written inside the source folder are not inputs
        (files if _is_image(p) else skipped).append(p)
    return files, skipped


def open_capture(target: str | int):
    """cv2.VideoCapture of a file or camera index (a seam the tests replace with a fake)."""
    try:
        import cv2
    except ImportError:
        raise SourceError(OPENCV_HINT) from None
    return cv2.VideoCapture(target)


def _capture_source(kind: str, spec: str, target: str | int, max_frames: int) -> Source:
    cap = open_capture(target)
    if not cap.isOpened():
        what = f"camera {target}" if kind == "camera" else f"{spec}: the video"
        raise SourceError(f"{what} could not be opened (no such device, or a codec OpenCV lacks)")
    import cv2
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if kind == "video" else 0
    total = count if count > 0 else None
    if max_frames and total is not None:
        total = min(total, max_frames)
    return Source(kind, spec, total=total if kind == "video" else (max_frames or None),
                  fps=float(fps) if 0 < fps < 1000 else 30.0, max_frames=max_frames, _capture=cap)


def open_source(spec: str, exclude: str | Path | None = None, max_frames: int = 0,
                pixel_limit: PixelLimit = DEFAULT_LIMIT) -> Source:
    """Classify SOURCE and prepare to read it. `exclude` is a folder whose files are never inputs
    (the output folder, when it lies inside the source folder); images above `pixel_limit` are
    reported and skipped."""
    source = _classify(spec, None if exclude is None else Path(exclude).resolve(), max_frames)
    source.pixel_limit = pixel_limit
    return source


def _classify(spec: str, exclude: Path | None, max_frames: int) -> Source:
    path = Path(spec)
    if spec.isdigit() and not path.exists():
        return _capture_source("camera", spec, int(spec), max_frames)
    if path.is_dir():
        files, skipped = _split(walk_files(path), exclude)
        return Source("folder", spec, files, path, skipped, total=len(files))
    if path.is_file():
        if path.suffix.lower() in VIDEO_EXTENSIONS:
            return _capture_source("video", spec, str(path), max_frames)
        if path.suffix.lower() == ".txt":
            return list_source(path, exclude)
        return Source("image", spec, [path], path.parent, total=1)
    if glob.has_magic(spec):
        files, skipped = _split(glob_files(spec), exclude)
        return Source("glob", spec, files, split_glob(spec)[0], skipped, total=len(files))
    raise SourceError(f"{spec}: no such file, folder or glob match (a camera is given by its index, e.g. 0)")


def _list_entries(path: Path) -> list[tuple[int, Record]]:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path}: cannot read the list file ({exc})") from None
    entries = []
    for number, line in enumerate(lines, 1):
        if line.strip() and not line.lstrip().startswith("#"):
            try:
                entries.append((number, parse_line(line.strip())))
            except ValueError as exc:
                raise SourceError(f"{path}:{number}: {exc}") from None
    return entries


def list_source(path: Path, exclude: Path | None = None) -> Source:
    """A `.txt` naming one image per line (annotation lines or bare paths), each path relative to
    the working directory or else to the list's folder, as Ultralytics reads one. When any line
    carries boxes, the lines are the ground truth of their images (`truth`), e.g. detpipe's split
    files. An image listed twice is read once."""
    found: dict[Path, Record] = {}
    seen: set[str] = set()
    missing: list[tuple[Path, str]] = []
    for number, record in _list_entries(path):
        image = next((c for c in (Path(record.path), path.parent / record.path) if c.is_file()), None)
        if image is None:
            missing.append((Path(record.path), f"{path}:{number}: no such file"))
        elif os.path.realpath(image) not in seen:
            seen.add(os.path.realpath(image))
            found[Path(os.path.abspath(image))] = record
    images, skipped = _split(list(found), exclude)
    kept = set(images)
    files = [f for f in found if f in kept]  # in the list's order
    base = Path(os.path.commonpath([f.parent for f in files])) if files else path.parent.absolute()
    truth = {f: found[f] for f in files} if any(len(r) for r in found.values()) else None
    return Source("list", str(path), files, base, skipped, missing, total=len(files) + len(missing), truth=truth)

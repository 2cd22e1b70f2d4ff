"""What `python -m detpipe predict SOURCE` reads: an image, a folder (recursively), a glob, a video
file or a camera index, as a stream of RGB frames.

Folders and globs take every file with an image extension (any case) and count the rest as
skipped; a file that cannot be decoded is reported and skipped, never fatal. Video files and
cameras are read with OpenCV (opencv-python-headless), which also writes the annotated video.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from .images import IMAGE_EXTENSIONS, load_rgb

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

    kind: str                      # image | folder | glob | video | camera
    spec: str
    files: list[Path] = field(default_factory=list)
    base: Path | None = None
    skipped: list[Path] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    total: int | None = None
    fps: float = 30.0
    max_frames: int = 0
    _capture: object = None

    def __iter__(self) -> Iterator[Frame]:
        if self.kind in ("video", "camera"):
            yield from self._frames()
            return
        for path in self.files:
            try:
                rgb = load_rgb(path)
            except Exception as exc:  # any decoder error: report the file, go on with the rest
                self.unreadable.append((path, f"{type(exc).__name__}: {exc}"))
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


def open_source(spec: str, exclude: str | Path | None = None, max_frames: int = 0) -> Source:
    """Classify SOURCE and prepare to read it. `exclude` is a folder whose files are never inputs
    (the output folder, when it lies inside the source folder)."""
    exclude = Path(exclude).resolve() if exclude is not None else None
    path = Path(spec)
    if spec.isdigit() and not path.exists():
        return _capture_source("camera", spec, int(spec), max_frames)
    if path.is_dir():
        files, skipped = _split([p for p in path.rglob("*") if p.is_file()], exclude)
        return Source("folder", spec, files, path, skipped, total=len(files))
    if path.is_file():
        if path.suffix.lower() in VIDEO_EXTENSIONS:
            return _capture_source("video", spec, str(path), max_frames)
        return Source("image", spec, [path], path.parent, total=1)
    if glob.has_magic(spec):
        matches = [Path(p) for p in glob.glob(spec, recursive=True) if os.path.isfile(p)]
        files, skipped = _split(matches, exclude)
        return Source("glob", spec, files, _glob_base(spec), skipped, total=len(files))
    raise SourceError(f"{spec}: no such file, folder or glob match (a camera is given by its index, e.g. 0)")


def _glob_base(spec: str) -> Path:
    """The folder before the first wildcard: results keep the matched files' paths below it."""
    parts = Path(spec).parts
    fixed = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")

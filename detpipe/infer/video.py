"""Writing annotated videos that play in a browser: H.264 in MP4 where OpenCV's FFmpeg can encode
it, else MPEG-4 Part 2 (`mp4v`, which browsers do not play) with a note saying so and how to convert.

OpenCV accepts a fourcc and may silently write another codec (or open a writer that fails on the
first frame), so each H.264 fourcc is tried on a two-frame probe file that is read back: only a
file whose stream really is H.264 counts.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np

H264_FOURCCS = ("avc1", "H264")   # what OpenCV's FFmpeg maps to its H.264 encoders (libx264, openh264)
H264_TAGS = {"avc1", "h264", "x264", "avc3"}
FALLBACK = "mp4v"


def fourcc_text(code: float) -> str:
    """CAP_PROP_FOURCC (a float holding 4 bytes) as text, '' when unknown."""
    value = int(code) & 0xFFFFFFFF
    return value.to_bytes(4, "little").decode("latin-1").strip("\x00") if value not in (0, 0xFFFFFFFF) else ""


def read_fourcc(path: str | Path) -> str:
    """The codec tag of a video file's stream as OpenCV reads it back ('' if unreadable)."""
    import cv2
    cap = cv2.VideoCapture(str(path))
    try:
        return fourcc_text(cap.get(cv2.CAP_PROP_FOURCC)) if cap.isOpened() else ""
    finally:
        cap.release()


@contextlib.contextmanager
def quiet_stderr():
    """Silence C-level stderr (FFmpeg prints encoder failures there while probing)."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def probe_h264(folder: Path, size: tuple[int, int], fps: float) -> str | None:
    """The first fourcc of H264_FOURCCS whose written file reads back as H.264, or None."""
    import cv2
    for code in H264_FOURCCS:
        fd, name = tempfile.mkstemp(suffix=".mp4", prefix=".probe_", dir=folder)
        os.close(fd)
        try:
            with quiet_stderr():
                writer = cv2.VideoWriter(name, cv2.VideoWriter_fourcc(*code), fps, size)
                if writer.isOpened():
                    for k in range(2):
                        writer.write(np.full((size[1], size[0], 3), 60 * k, np.uint8))
                writer.release()
                if read_fourcc(name).lower() in H264_TAGS:
                    return code
        finally:
            os.unlink(name)
    return None


def open_video_writer(path: Path, fps: float, size: tuple[int, int]):
    """(cv2.VideoWriter, fourcc used, note or None). The note says the file will not play in a
    browser and how to convert it."""
    import cv2
    path.parent.mkdir(parents=True, exist_ok=True)
    # H.264 encoders need even sizes; FFmpeg refuses odd ones for yuv420p.
    code = probe_h264(path.parent, size, fps) if size[0] % 2 == 0 and size[1] % 2 == 0 else None
    note = None
    if code is None:
        code = FALLBACK
        note = (f"note: {path} is MPEG-4 Part 2 (mp4v): this OpenCV's FFmpeg cannot encode H.264"
                f"{' at an odd frame size' if size[0] % 2 or size[1] % 2 else ''}, so browsers will not play it; "
                f"convert it with `ffmpeg -i {path} -c:v libx264 -pix_fmt yuv420p {path.with_name(path.stem + '_h264.mp4')}`")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*code), fps, size)
    return writer, code, note

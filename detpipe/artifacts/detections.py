"""data/detections/test.csv: every box the predict stage found (score >= map.confidence), the map
stage's input. One row per box: the image path as in the split file, the class name, the score and
the corners x1, y1, x2, y2 in the image's own pixels. The header is exactly COLUMNS.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import atomic
from .error import ArtifactError

COLUMNS = ("image", "class", "score", "x1", "y1", "x2", "y2")
NUMBERS = COLUMNS[2:]


def write_detections(path: str | Path, image_paths: Sequence[str], dets: Sequence[dict],
                     class_names: Sequence[str]) -> int:
    """Rows of `dets` (per image: boxes [K, 4], scores [K], labels [K]); returns the number of rows."""
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    rows = 0
    for image, det in zip(image_paths, dets):
        for box, score, label in zip(det["boxes"], det["scores"], det["labels"]):
            writer.writerow([image, class_names[int(label)], f"{score:.6f}", *(f"{v:.2f}" for v in box)])
            rows += 1
    atomic.write_text(path, text.getvalue())
    return rows


def read_detections(path: str | Path) -> tuple[list[str], list[str], np.ndarray, list[int]]:
    """(image per row, class name per row, float64 [N, 5] of score x1 y1 x2 y2, file line per row).

    A header other than COLUMNS, a short row or a word where a number belongs is an ArtifactError
    naming the file and line; what the names and numbers mean is the reader's to check."""
    images, classes, values, lines = [], [], [], []
    try:
        fh = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read it ({exc.strerror or exc}); rerun the predict stage") from None
    with fh:
        reader = csv.reader(fh)
        header = tuple(next(reader, ()))
        if header != COLUMNS:
            raise ArtifactError(f"{path}:1: the header is {','.join(header) or 'missing'}; expected "
                                f"{','.join(COLUMNS)} (rerun the predict stage)")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if len(row) != len(COLUMNS):
                raise ArtifactError(f"{where}: {len(row)} fields; expected {len(COLUMNS)} ({','.join(COLUMNS)})")
            try:
                values.append([float(v) for v in row[2:]])
            except ValueError:
                bad = next(c for c, v in zip(NUMBERS, row[2:]) if not _is_number(v))
                raise ArtifactError(f"{where}: {bad} {row[COLUMNS.index(bad)]!r} is not a number") from None
            images.append(row[0])
            classes.append(row[1])
            lines.append(reader.line_num)
    return images, classes, np.array(values, np.float64).reshape(-1, len(NUMBERS)), lines


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True

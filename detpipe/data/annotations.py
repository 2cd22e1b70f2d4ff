"""The annotation line format shared with the tutorial repos' `2007_train.txt`.

One image per line: ``path x1,y1,x2,y2,cls x1,y1,x2,y2,cls ...``. The path is everything before
the first box token, so paths with spaces and non-ASCII characters round-trip. A difficult
object carries a sixth field ``1`` (``x1,y1,x2,y2,cls,1``): tools that read the first five
fields keep working, and evaluation can still ignore difficult objects as VOC does.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_NUM = r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_BOX = rf"{_NUM},{_NUM},{_NUM},{_NUM},\d+(?:,[01])?"
_TAIL = re.compile(rf"(?:\s+{_BOX})+\s*$")


@dataclass(frozen=True)
class Record:
    """One annotation line. `boxes` is float64 [N, 4] xyxy in pixels, `labels` int64 [N],
    `difficult` bool [N]."""

    path: str
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def ground_truths(records: list[Record]) -> list[dict[str, np.ndarray]]:
    """Records as the metrics' per-image ground truth: {"boxes" [N, 4], "labels" [N], "difficult" [N]}."""
    return [{"boxes": r.boxes, "labels": r.labels, "difficult": r.difficult} for r in records]


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def format_line(record: Record) -> str:
    """Serialise a record to one line (no trailing newline)."""
    if "\n" in record.path or "\r" in record.path:
        raise ValueError(f"image path contains a line break: {record.path!r}")
    tokens = [record.path]
    for box, label, diff in zip(record.boxes, record.labels, record.difficult):
        fields = [_fmt(c) for c in box] + [str(int(label))]
        if diff:
            fields.append("1")
        tokens.append(",".join(fields))
    return " ".join(tokens)


def parse_line(line: str) -> Record:
    """Parse one line; raises ValueError with the line when no path is present."""
    line = line.rstrip("\r\n")
    match = _TAIL.search(line)
    path, tail = (line[: match.start()], match.group()) if match else (line.rstrip(), "")
    if not path.strip():
        raise ValueError(f"annotation line has no image path: {line!r}")
    rows = [tok.split(",") for tok in tail.split()]
    boxes = np.array([[float(v) for v in r[:4]] for r in rows], dtype=np.float64).reshape(-1, 4)
    labels = np.array([int(r[4]) for r in rows], dtype=np.int64)
    difficult = np.array([len(r) > 5 and r[5] == "1" for r in rows], dtype=bool)
    return Record(path, boxes, labels, difficult)


def read_lines(path: str | Path) -> list[Record]:
    """Read an annotation file; errors name the file and line number."""
    records = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                records.append(parse_line(line))
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: {exc}") from None
    return records


def write_lines(path: str | Path, records: list[Record]) -> None:
    """Write records, one per line, UTF-8."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for record in records:
            fh.write(format_line(record) + "\n")

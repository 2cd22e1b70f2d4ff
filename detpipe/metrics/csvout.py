"""Writing long CSVs of numbers in [0, 1] (PR curves: one row per detection) without a Python
loop per row.

The bytes are exactly what `csv.writer` writes for the `np.round(column, 6)` values (repr of
each float, CRLF line ends): a value v = k / 1e6 with 100 <= k < 1e6 prints as '0.' plus k's six
digits without trailing zeros (a shorter decimal would be another multiple of 1e-6, far more than
half an ulp away), and the 102 others (0, 1e-06 ... 9.9e-05, 1) come from a table of their
reprs. Columns with anything else (NaN, negatives, values above 1) fall back to csv.writer.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

_WIDTH = 8  # the longest field: '0.123456', and the table's '1.1e-05'
_SPECIAL = [0, *range(1, 100), 1_000_000]  # integers k whose repr(k / 1e6) is not '0.dddddd'
_TABLE = np.zeros((len(_SPECIAL), _WIDTH), np.uint8)
_TABLE_LEN = np.zeros(len(_SPECIAL), np.int64)
for _i, _k in enumerate(_SPECIAL):
    _s = repr(_k / 1e6).encode()
    _TABLE[_i, :len(_s)] = np.frombuffer(_s, np.uint8)
    _TABLE_LEN[_i] = len(_s)


def _fill(field: np.ndarray, keep: np.ndarray, x: np.ndarray) -> None:
    """Write repr(np.round(x, 6)) (0 <= x <= 1) into field [N, _WIDTH] and mark its bytes in keep."""
    k = np.rint(x * 1e6).astype(np.int32)  # np.round(x, 6) is rint(x * 1e6) / 1e6
    field[:, 0], field[:, 1] = ord("0"), ord(".")
    rest = k.copy()
    length = np.full(len(k), _WIDTH, np.int8)
    trailing = np.ones(len(k), bool)
    for pos in range(_WIDTH - 1, 1, -1):  # least significant digit first
        digit = rest % 10
        field[:, pos] = digit + 48
        trailing &= digit == 0
        length -= trailing
        rest //= 10
    special = np.flatnonzero((k < 100) | (k >= 1_000_000))
    if len(special):
        row = np.searchsorted(_SPECIAL, k[special])
        field[special], length[special] = _TABLE[row], _TABLE_LEN[row]
    np.less(np.arange(_WIDTH, dtype=np.int8), length[:, None], out=keep)


def write_columns(path: str | Path, header: list[str], columns: list[np.ndarray]) -> None:
    """Write a CSV of equally long float columns as csv.writer would write np.round(col, 6)."""
    cols = [np.asarray(c, np.float64).reshape(-1) for c in columns]
    if not all(((c >= 0) & (c <= 1) & ~np.signbit(c)).all() for c in cols):
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows(zip(*(np.round(c, 6) for c in cols)))
        return
    slot = _WIDTH + 2  # the field, then ',' or the final CRLF
    row = np.empty((len(cols[0]), len(cols), slot), np.uint8)
    keep = np.empty(row.shape, bool)
    for j, c in enumerate(cols):
        _fill(row[:, j, :_WIDTH], keep[:, j, :_WIDTH], c)
        row[:, j, _WIDTH:] = np.frombuffer(b"\r\n" if j == len(cols) - 1 else b",\0", np.uint8)
        keep[:, j, _WIDTH] = True
        keep[:, j, _WIDTH + 1] = j == len(cols) - 1
    with open(path, "wb") as fh:
        fh.write((",".join(header) + "\r\n").encode("utf-8"))
        fh.write(row[keep].tobytes())

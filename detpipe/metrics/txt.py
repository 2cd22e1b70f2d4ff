"""Reading one-txt-per-image folders (the Cartucho/mAP format, what `predict --save-txt` writes).

Ground-truth lines are `class x1 y1 x2 y2 [difficult]` (the flag: `difficult`, `1` or `0`) and
detection lines `class score x1 y1 x2 y2`. The numbers are taken from the end of the line, so a
class name may contain spaces (`traffic light 0.9 1 2 3 4`; runs of blanks inside it become one
space). Blank lines, CRLF or CR line ends, tabs, trailing blanks, a UTF-8 BOM and numbers such
as `1e3` or `+5` are accepted; NaN and infinity are not.

Speed: 10,000 files of 500k lines are read with one read per file and joined; one numpy pass
over the bytes counts each line's tokens, numpy's C text parser reads the numbers of every
regular line at once, and only irregular lines (a class name with spaces, a malformed line) go
through Python one by one. `parse_line` is the line-by-line definition of the format; the tests
check the fast path against it.
"""
from __future__ import annotations

import codecs
import io as _io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .flat import EvalData
from .validate import InputError, check_numbers, class_warnings, nearest_name

# The separators of bytes.split(); \n ends lines (CR and CRLF are turned into \n first).
_SPACE = np.zeros(256, bool)
_SPACE[list(b" \t\n\x0b\x0c\r")] = True
_FLAGS = {"difficult": True, "1": True, "0": False}
FORMATS = {"gt": "class x1 y1 x2 y2 [difficult]", "det": "class score x1 y1 x2 y2"}
NUMBERS = {"gt": 4, "det": 5}  # numbers at the end of a line, besides the optional flag


@dataclass(frozen=True)
class TxtRows:
    """The lines of a set of files, in file then line order.

    file int64 [N] (index into the paths), line int64 [N] (1-based), names list[str] (distinct
    class names in order of first appearance), cls int64 [N] (index into names), values float64
    [N, 4] (gt: x1 y1 x2 y2) or [N, 5] (det: score x1 y1 x2 y2), flag bool [N] (gt: difficult).
    """

    paths: list[str | Path]
    file: np.ndarray
    line: np.ndarray
    names: list[str]
    cls: np.ndarray
    values: np.ndarray
    flag: np.ndarray

    def where(self, row: int) -> str:
        return f"{self.paths[self.file[row]]}:{self.line[row]}"


def _number(token: str, where: str, what: str) -> float:
    """float() restricted to what numpy's text parser also reads (no '1_000', no hex)."""
    try:
        if "_" in token:
            raise ValueError
        return float(token)
    except ValueError:
        raise InputError(f"{where}: {what} {token!r} is not a number") from None


def parse_line(tokens: list[str], kind: str, where: str) -> tuple[str, list[float], bool]:
    """One non-blank line's tokens -> (class name, numbers, difficult). The format's definition."""
    n = NUMBERS[kind]
    flag = False
    if kind == "gt" and len(tokens) >= n + 2 and tokens[-1].lower() in _FLAGS:
        try:  # a trailing 0/1 is a flag only if the four tokens before it are numbers
            [_number(t, where, "") for t in tokens[-n - 1:-1]]
            flag, tokens = _FLAGS[tokens[-1].lower()], tokens[:-1]
        except InputError:
            pass
    if len(tokens) < n + 1:
        raise InputError(f"{where}: expected '{FORMATS[kind]}', got {' '.join(tokens)!r}")
    what = ["coordinate"] * 4 if kind == "gt" else ["score"] + ["coordinate"] * 4
    values = [_number(t, where, w) for t, w in zip(tokens[-n:], what)]
    return " ".join(tokens[:-n]), values, flag


def _read(paths: list[str | Path]) -> tuple[bytes, np.ndarray]:
    """All files' bytes joined, BOM dropped, line ends made \\n and a final one ensured; and the
    number of lines of each file."""
    parts, lines = [], []
    for p in paths:
        try:
            with open(p, "rb", buffering=0) as fh:
                data = fh.readall()
        except OSError as exc:
            raise InputError(f"{p}: cannot read ({exc.strerror})") from None
        if data.startswith(codecs.BOM_UTF8):
            data = data[3:]
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if data and not data.endswith(b"\n"):
            data += b"\n"
        parts.append(data)
        lines.append(data.count(b"\n"))
    return b"".join(parts), np.array(lines, np.int64)


_CHUNK = 1 << 20  # bytes scanned at a time: temporaries stay in cache and are reused


@dataclass(frozen=True)
class _Lines:
    """Per line (a line ends at its \\n): token count, and the [start, end) offsets of its first
    and last tokens (meaningless on blank lines)."""

    nl: np.ndarray
    count: np.ndarray
    first: np.ndarray
    last: np.ndarray


def _scan(a: np.ndarray) -> _Lines:
    """Tokens of every line of a (which ends with \\n), counted chunk by chunk."""
    nl = np.concatenate([np.zeros(0, np.int64)] + [np.flatnonzero(a[lo:lo + _CHUNK] == 10) + lo
                                                    for lo in range(0, len(a), _CHUNK)])
    cuts = np.r_[0, nl[np.unique(np.searchsorted(nl, np.arange(_CHUNK, len(a), _CHUNK)))] + 1]
    cuts = np.unique(np.r_[cuts, len(a)])
    count, first, last = [np.zeros(0, np.int64)], [np.zeros((0, 2), np.int64)], [np.zeros((0, 2), np.int64)]
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        word = ~_SPACE[a[lo:hi]]
        w = word.view(np.int8)
        edges = np.flatnonzero(w[1:] != w[:-1]) + (lo + 1)  # token starts and ends, alternating
        if word[0]:
            edges = np.r_[lo, edges]
        start, end = edges[0::2], edges[1::2]  # the chunk ends with \n: every token ends in it
        ends = nl[np.searchsorted(nl, lo):np.searchsorted(nl, hi)]
        c = np.diff(np.searchsorted(start, ends), prepend=0)
        if len(start) == 0:
            start = end = np.zeros(1, np.int64)
        f = np.minimum(np.cumsum(c) - c, len(start) - 1)
        t = np.maximum(np.cumsum(c) - 1, 0)
        count.append(c)
        first.append(np.c_[start[f], end[f]])
        last.append(np.c_[start[t], end[t]])
    return _Lines(nl, np.concatenate(count), np.concatenate(first), np.concatenate(last))


def _names(a: np.ndarray, tokens: np.ndarray) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    """Distinct byte strings a[start:end] ([start, end) rows of tokens) in order of first
    appearance, each row's index into them, and the row where each first appears.

    Each string becomes zero-padded uint64 words folded into one key; np.unique on the keys is
    ~10x faster than on byte strings, and every row is checked against its key's first row, so
    a key collision only costs the slow path."""
    start, end = tokens[:, 0], tokens[:, 1]
    if len(start) == 0:
        return [], np.zeros(0, np.int64), np.zeros(0, np.int64)
    length = end - start
    words = -(-int(length.max()) // 8)
    if words > 8:  # names over 64 bytes: rare, let Python hash them
        return _names_py(a, start, end)
    grid = np.zeros((len(start), 8 * words), np.uint8)
    for j in range(int(length.max())):  # column by column: small temporaries
        grid[:, j] = a[np.minimum(start + j, len(a) - 1)] * (length > j)
    grid = grid.view(np.uint64)
    key = length.astype(np.uint64)
    for j in range(words):
        key = key * np.uint64(0x100000001B3) ^ grid[:, j]
    uniq, inv = np.unique(key, return_inverse=True)
    first = np.full(len(uniq), len(key))
    np.minimum.at(first, inv, np.arange(len(key)))
    rep = first[inv]
    if not ((grid == grid[rep]).all() and (length == length[rep]).all()):
        return _names_py(a, start, end)
    order = np.argsort(first)  # first-appearance order, independent of byte values
    remap = np.empty(len(order), np.int64)
    remap[order] = np.arange(len(order))
    return [a[start[first[i]]:end[first[i]]].tobytes() for i in order], remap[inv], first[order]


def _names_py(a: np.ndarray, start: np.ndarray, end: np.ndarray) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    index: dict[bytes, int] = {}
    blob = a.tobytes()
    ids = np.array([index.setdefault(blob[s:e], len(index)) for s, e in zip(start.tolist(), end.tolist())],
                   np.int64)
    return list(index), ids, np.unique(ids, return_index=True)[1]


def read_txt_files(paths: list[str | Path], kind: str) -> TxtRows:
    """Parse the files of one side ("gt" or "det"); errors name the file and line."""
    blob, n_lines = _read(paths)
    a = np.frombuffer(blob, np.uint8)
    lines = _scan(a)
    first_line = np.cumsum(n_lines) - n_lines

    def where(line: int) -> str:
        f = int(np.searchsorted(first_line, line, "right") - 1)
        return f"{paths[f]}:{line - first_line[f] + 1}"

    n = NUMBERS[kind]
    flag_line = np.zeros(len(lines.count), bool)
    if kind == "gt":
        six = np.flatnonzero(lines.count == n + 2)
        flag_line[six] = _is_flag(a, lines.last[six])
    regular = (lines.count == n + 1) | flag_line
    reg, odd = np.flatnonzero(regular), np.flatnonzero((lines.count > 0) & ~regular)
    values = _numbers(blob, lines, odd, flag_line, len(reg), n)
    if values is None:  # a token numpy cannot read: parse every line in Python, which says where
        reg, odd = reg[:0], np.flatnonzero(lines.count > 0)
        values, names, cls, flags = np.zeros((0, n)), [], np.zeros(0, np.int64), np.zeros(0, bool)
    else:
        names_b, cls, first_row = _names(a, lines.first[reg])
        names = [_decode(b, where(int(reg[r])), "class name") for b, r in zip(names_b, first_row)]
        flags = flag_line[reg]
        last = lines.last[reg[flags]]
        zero = (last[:, 1] - last[:, 0] == 1) & (a[last[:, 0]] == ord("0"))  # flag 0: not difficult
        flags[np.flatnonzero(flags)[zero]] = False
    if len(odd):
        reg, values, cls, flags, names = _merge(reg, values, cls, flags, names,
                                                _slow_lines(blob, lines.nl, odd, kind, where))
    f = np.searchsorted(first_line, reg, "right") - 1
    return TxtRows(list(paths), f, reg - first_line[f] + 1, names, cls, values, flags)


def _numbers(blob: bytes, lines: _Lines, odd: np.ndarray, flag_line: np.ndarray, rows: int,
             n: int) -> np.ndarray | None:
    """The last n numbers of every regular line [rows, n] by numpy's C parser, with odd lines and
    flags blanked out; None if it cannot read them."""
    if rows == 0:
        return np.zeros((0, n))
    text = blob
    if len(odd) or flag_line.any():
        buf = np.frombuffer(bytearray(blob), np.uint8)
        line_start = np.r_[0, lines.nl[:-1] + 1]
        _blank(buf, line_start[odd], lines.nl[odd])
        _blank(buf, lines.last[flag_line, 0], lines.last[flag_line, 1])
        text = buf.tobytes()
    try:
        values = np.loadtxt(_io.BytesIO(text), usecols=range(1, n + 1), comments=None, ndmin=2,
                            dtype=np.float64)
    except ValueError:
        return None
    return values if values.shape == (rows, n) else None


def _blank(buf: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
    """Set buf[lo[i]:hi[i]] to spaces for every i."""
    length = hi - lo
    if length.sum() == 0:
        return
    idx = np.repeat(lo - (np.cumsum(length) - length), length) + np.arange(int(length.sum()))
    buf[idx] = 32


def _is_flag(a: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Whether each token ([start, end) rows) is `difficult` (any case), `1` or `0`."""
    start, end = tokens[:, 0], tokens[:, 1]
    length = end - start
    one = (length == 1) & np.isin(a[np.minimum(start, len(a) - 1)], (48, 49))
    word = np.frombuffer(b"difficult", np.uint8)
    nine = np.flatnonzero(length == 9)
    low = a[start[nine, None] + np.arange(9)] | 0x20  # ASCII lower case; digits stay distinct
    one[nine] = (low == word).all(axis=1)
    return one


def _decode(raw: bytes, where: str, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{where}: {what} {raw!r} is not UTF-8 text; save the file as UTF-8") from None


def _slow_lines(blob: bytes, nl: np.ndarray, lines: np.ndarray, kind: str, where) -> dict:
    """parse_line on the given line indices (rare: odd lines, or every line to find an error)."""
    begin = np.r_[0, nl[:-1] + 1]
    out = {"line": [], "name": [], "values": [], "flag": []}
    for i in lines.tolist():
        w = where(i)
        tokens = [_decode(t, w, "text") for t in blob[begin[i]:nl[i]].split()]
        name, values, flag = parse_line(tokens, kind, w)
        for k, v in zip(out, (i, name, values, flag)):
            out[k].append(v)
    return out


def _merge(reg, values, cls, flags, names, extra):
    """Fast rows plus line-by-line rows, in line order, with one class index."""
    index = {nm: k for k, nm in enumerate(names)}
    for nm in extra["name"]:
        index.setdefault(nm, len(index))
    lines = np.r_[reg, np.array(extra["line"], np.int64)]
    order = np.argsort(lines, kind="stable")
    n = values.shape[1]
    values = np.concatenate([values, np.array(extra["values"], np.float64).reshape(-1, n)])
    cls = np.r_[cls, np.array([index[nm] for nm in extra["name"]], np.int64)]
    flags = np.r_[flags, np.array(extra["flag"], bool)]
    return lines[order], values[order], cls[order], flags[order], list(index)


def pair_files(gt_dir: str | Path, det_dir: str | Path) -> tuple[list[str], list[str]]:
    """The .txt files of both folders, paired by name in sorted order; every image needs both."""
    gt_dir, det_dir = Path(gt_dir), Path(det_dir)
    for d in (gt_dir, det_dir):
        if not d.is_dir():
            raise InputError(f"{d}: not a directory")
    # os.listdir and plain strings: 10,000 Path objects from glob cost ~30 ms
    gt_files = {n: os.path.join(gt_dir, n) for n in os.listdir(gt_dir) if n.endswith(".txt")}
    det_files = {n: os.path.join(det_dir, n) for n in os.listdir(det_dir) if n.endswith(".txt")}
    if not gt_files:
        raise InputError(f"{gt_dir}: no ground-truth .txt files")
    for missing, have, where in ((sorted(set(gt_files) - set(det_files)), gt_dir, det_dir),
                                 (sorted(set(det_files) - set(gt_files)), det_dir, gt_dir)):
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise InputError(f"{where / missing[0]}: missing, but {have / missing[0]} exists{more}; "
                             "every image needs both files (an empty file means no boxes)")
    names = sorted(gt_files)
    return [gt_files[n] for n in names], [det_files[n] for n in names]


def read_txt_dirs(gt_dir: str | Path, det_dir: str | Path, class_names: list[str] | None = None
                  ) -> tuple[EvalData, list[str], list[str]]:
    """Both folders as (EvalData, class names, warnings); images in sorted file-name order.

    Classes are `class_names` if given (any other name is an error), else the sorted
    ground-truth classes: detections of other classes are dropped with a warning (with the
    nearest ground-truth name), as are classes found on one side only."""
    gt_paths, det_paths = pair_files(gt_dir, det_dir)
    g = read_txt_files(gt_paths, "gt")
    d = read_txt_files(det_paths, "det")
    check_numbers(g.values, ["x1", "y1", "x2", "y2"], g.where, slice(0, 4), xywh=False)
    check_numbers(d.values, ["score", "x1", "y1", "x2", "y2"], d.where, slice(1, 5), xywh=False)
    names = list(class_names) if class_names else sorted(g.names)
    index = {n: i for i, n in enumerate(names)}
    g_lab, d_lab = (np.array([index.get(n, -1) for n in rows.names], np.int64)[rows.cls] if len(rows.cls)
                    else np.zeros(0, np.int64) for rows in (g, d))
    for rows, lab in ((g, g_lab), (d, d_lab)):
        if class_names and (lab < 0).any():
            row = int(np.argmax(lab < 0))
            name = rows.names[rows.cls[row]]
            near = nearest_name(name, names)
            raise InputError(f"{rows.where(row)}: class {name!r} is not in --classes ({', '.join(names)})"
                             + (f"; did you mean {near!r}?" if near else ""))
    unscored = {n: int(c) for n, c in zip(d.names, np.bincount(d.cls, minlength=len(d.names)))
                if n not in index}
    keep = np.flatnonzero(d_lab >= 0) if unscored else slice(None)
    data = EvalData(len(gt_paths), g.file, g.values, g_lab, g.flag,
                    d.file[keep], d.values[keep, 1:], d_lab[keep], d.values[keep, 0])
    n_gt = np.bincount(g_lab[~g.flag], minlength=len(names))
    n_det = np.bincount(d_lab[keep], minlength=len(names))
    return data, names, class_warnings(names, n_gt, n_det, unscored)

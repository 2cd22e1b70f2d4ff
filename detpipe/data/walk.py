"""Folder walks and globs that follow symlinked folders but never go round a symlink loop.

Each real folder is entered once (by device and inode) and each real file is listed once (by its
resolved path; hard links stay distinct files, as DVC's link cache makes identical images hard
links of one another). Results are in sorted order, so every run lists the same files the same
way. `glob.glob(recursive=True)` instead follows a loop until the path is too long (one file
listed 41 times) and two loops make it exponential.
"""
from __future__ import annotations

import fnmatch
import glob
import os
from pathlib import Path
from typing import Callable


def walk_files(root: str | Path, descend: Callable[[tuple[str, ...]], bool] = lambda parts: True) -> list[Path]:
    """Every file below `root`, following symlinked folders, each real folder and file once, in
    sorted order. `descend(relative_parts)` may refuse to enter a sub-folder (pruning)."""
    root = Path(root)
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[str] = set()
    files: list[Path] = []
    stack: list[tuple[Path, tuple[str, ...]]] = [(root, ())]
    while stack:
        folder, parts = stack.pop()
        try:
            st = folder.stat()
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue  # unreadable or vanished folder: nothing to list
        if (st.st_dev, st.st_ino) in seen_dirs:
            continue
        seen_dirs.add((st.st_dev, st.st_ino))
        subdirs = []
        for entry in entries:
            try:
                if entry.is_dir():
                    if descend(parts + (entry.name,)):
                        subdirs.append((Path(entry.path), parts + (entry.name,)))
                elif entry.is_file():
                    real = os.path.realpath(entry.path)
                    if real not in seen_files:
                        seen_files.add(real)
                        files.append(Path(entry.path))
            except OSError:
                continue  # a dangling symlink or a permission error: not a file we can read
        stack.extend(reversed(subdirs))  # depth-first, in name order
    return files


def _match(parts: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    """glob's rules on path components: `**` is zero or more folders, other components match by
    fnmatch (case-sensitive on POSIX, as glob); wildcards skip names starting with a dot."""
    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        if _match(parts, rest):
            return True
        return bool(parts) and not parts[0].startswith(".") and _match(parts[1:], pattern)
    if not parts:
        return False
    name = parts[0]
    if glob.has_magic(head) and name.startswith(".") and not head.startswith("."):
        return False
    ok = fnmatch.fnmatch(name, head) if os.name == "nt" else fnmatch.fnmatchcase(name, head)
    return ok and _match(parts[1:], rest)


def split_glob(spec: str) -> tuple[Path, tuple[str, ...]]:
    """The folder before the first wildcard and the pattern's components below it."""
    parts = Path(spec).parts
    k = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
    return (Path(*parts[:k]) if k else Path(".")), tuple(parts[k:])


def glob_files(spec: str) -> list[Path]:
    """The files a recursive glob matches, walked loop-safely from the folder before the first
    wildcard; paths keep that folder as given (relative stays relative)."""
    base, pattern = split_glob(spec)
    if not pattern:
        return [base] if base.is_file() else []
    deep = "**" in pattern

    def descend(parts: tuple[str, ...]) -> bool:
        if deep:
            return True
        return len(parts) < len(pattern) and all(_match((p,), (q,)) for p, q in zip(parts, pattern))

    found = walk_files(base, descend)
    return [p for p in found if _match(p.relative_to(base).parts, pattern)]

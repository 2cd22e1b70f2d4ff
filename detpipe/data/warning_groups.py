"""The annotate stage's warnings as people read them: grouped by kind with counts and the first few
files, the ones that matter first, and class-name typos with a nearest-name suggestion.

26 harmless "mode L converted to RGB" lines must not push "class 'cirlce' has no kept objects"
off the screen. Order: a class that never appears first (CLASS_NEVER_SEEN), then kinds that
dropped images or objects (derived from the report's skipped counts, so a new kind of skip sorts
there by itself), then kinds that changed data (a clipped box …), and last the INFORMATIONAL
kinds, which change no label; within each, the most frequent kind first. A kind not listed as
informational therefore sorts before them: a new kind is never hidden by default. The JSON
report keeps every warning.
"""
from __future__ import annotations

import difflib
from typing import Iterable, Sequence

from ..artifacts.annotate_report import AnnotateReport, Issue

CLASS_NEVER_SEEN = "class_without_objects"
# Conversions that keep every label as meant (checked against the kinds the code emits by a test).
INFORMATIONAL = ("converted_mode", "exif_rotated", "float_coordinates", "filename_case")


def nearest_name(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate `name` is most likely a typo of: equal ignoring case and spaces, else the
    closest by difflib's ratio (>= 0.6, its customary cutoff); None when nothing is close."""
    pool = [c for c in dict.fromkeys(candidates) if c != name]
    squash = "".join(name.split()).casefold()
    same = [c for c in pool if "".join(c.split()).casefold() == squash]
    if same:
        return same[0]
    close = difflib.get_close_matches(name.casefold(), [c.casefold() for c in pool], n=1, cutoff=0.6)
    return next(c for c in pool if c.casefold() == close[0]) if close else None


def lossy_kinds(report: AnnotateReport) -> set[str]:
    """Warning kinds that skipped images or objects, read from the report's own counts."""
    skipped = list(report.images.skipped) + list(report.objects.skipped)
    return {k.split(":")[-1] for k in skipped}


def ordered_groups(warnings: Sequence[Issue], lossy: set[str]) -> list[tuple[str, list[Issue]]]:
    groups: dict[str, list[Issue]] = {}
    for w in warnings:
        groups.setdefault(w.kind, []).append(w)
    rank = lambda kind: (kind != CLASS_NEVER_SEEN, kind not in lossy, kind in INFORMATIONAL,  # noqa: E731
                         -len(groups[kind]), kind)
    return [(kind, groups[kind]) for kind in sorted(groups, key=rank)]


def format_warnings(report: AnnotateReport, show: int = 3) -> list[str]:
    """Lines for stdout: per kind the count, the first message in full and the next `show` files
    (every message of the never-seen-class kind, one per class)."""
    warnings = report.warnings
    if not warnings:
        return []
    groups = ordered_groups(warnings, lossy_kinds(report))
    lines = [f"{len(warnings)} warning(s) of {len(groups)} kind(s), most important first (all in the JSON report):"]
    for kind, group in groups:
        full = group if kind == CLASS_NEVER_SEEN else group[:1]
        lines += [f"warning [{kind}]{f' x{len(group)}' if len(group) > 1 else ''}: {w.message}" for w in full]
        rest = group[len(full):]
        if rest:
            files = list(dict.fromkeys(w.file for w in rest))
            more = f" … and {len(files) - show} more" if len(files) > show else ""
            lines.append(f"    also {', '.join(files[:show])}{more}")
    return lines

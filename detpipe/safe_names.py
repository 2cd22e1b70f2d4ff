"""Names that come from files (class names in a model or dataset, image names) made safe as one
path component, and unique within a folder.

A crafted model may name a class `../../x`, `/etc`, `C:\\x`, `nul` or `a\\x00b`; a dataset may hold
`one.jpg` and `one.png`. Every such name goes through `safe_name` before it becomes part of a
path, and names that share a folder through `UniqueNames`, so nothing is written outside the
output folder and nothing is overwritten.
"""
from __future__ import annotations

import re

# Windows refuses these as file names with any extension (`nul.txt` is the null device).
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
_UNSAFE = re.compile(r"[\x00-\x1f\x7f<>:\"/\\|?*]+")
MAX_BYTES = 200  # below every common file-system limit (255), leaving room for suffixes


def safe_name(name: str, fallback: str = "unnamed") -> str:
    """One path component from any text: separators, control characters (NUL included) and the
    characters Windows forbids become `_`; leading dots and spaces and trailing dots and spaces
    (which Windows drops) go; a Windows device name gets a `_` prefix; the result is at most
    MAX_BYTES of UTF-8 and never empty, `.` or `..`. Letters of any script are kept."""
    text = _UNSAFE.sub("_", str(name)).strip(" .")
    if not text:
        return fallback
    if text.split(".")[0].lower() in _RESERVED:
        text = "_" + text
    encoded = text.encode("utf-8")
    if len(encoded) > MAX_BYTES:
        text = encoded[:MAX_BYTES].decode("utf-8", "ignore").rstrip(" .") or fallback
    return text


class UniqueNames:
    """Hands out names that never collide within one folder, also on case-insensitive file
    systems (macOS, Windows): the first owner of a name keeps it, later ones get `_2`, `_3` ...
    `renamed` maps each changed key to the name it got."""

    def __init__(self) -> None:
        self.taken: set[str] = set()
        self.renamed: dict[str, str] = {}

    def claim(self, wanted: str, key: str | None = None, suffix: str = "", alternative: str = "") -> str:
        """A free name: `wanted` + `suffix` if free, else `alternative` + `suffix` (when given),
        else `wanted_2` + `suffix`, `wanted_3` ... (the suffix, e.g. `.jpg`, stays last). `key`
        names the owner in `renamed`."""
        name, k = wanted, 1
        if alternative and (name + suffix).casefold() in self.taken:
            name = alternative
        while (name + suffix).casefold() in self.taken:
            k += 1
            name = f"{alternative or wanted}_{k}"
        self.taken.add((name + suffix).casefold())
        if name != wanted:
            self.renamed[key if key is not None else wanted] = name + suffix
        return name + suffix


def unique_safe_names(names: list[str]) -> list[str]:
    """`safe_name` of each name, made unique (e.g. class folders: `a/b` and `a_b` stay apart)."""
    pool = UniqueNames()
    return [pool.claim(safe_name(n), n) for n in names]

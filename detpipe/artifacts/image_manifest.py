"""Image manifests: the content hash of every image a stage hands on, in `sha256sum` format.

`<64 hex digits>  <path>` per line (paths relative to the repo root, as in the annotation lines),
so `sha256sum -c data/images.sha256` checks a dataset by hand. The annotate stage writes one for
all kept images, the split stage one per split: a changed pixel changes the manifest of the split
the image is in, and with it exactly the stages that read that split (and the training
fingerprint), while the annotation lines themselves stay the same.
"""
from __future__ import annotations

import hashlib
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Mapping

from ..cpus import usable_cpus

_LINE = re.compile(r"^([0-9a-f]{64})  (.+)$")


class ManifestError(ValueError):
    """A manifest file is malformed or does not match the annotation lines; the message says which."""


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def hash_files(paths: Iterable[str], base: str | Path = ".", workers: int = 0) -> dict[str, str]:
    """{path: sha256} for files named relative to `base`; hashing releases the GIL, so threads help
    on many files."""
    paths = list(paths)
    base = Path(base)
    workers = workers or min(8, usable_cpus())
    if len(paths) < 64 or workers <= 1:
        return {p: file_sha256(base / p) for p in paths}
    with ThreadPoolExecutor(workers) as pool:
        return dict(zip(paths, pool.map(lambda p: file_sha256(base / p), paths)))


def write_manifest(path: str | Path, hashes: Mapping[str, str]) -> None:
    """Write `{path: sha256}` in the given order (atomically: a kill leaves the old file or the new)."""
    text = "".join(f"{digest}  {name}\n" for name, digest in hashes.items())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_manifest(path: str | Path) -> dict[str, str]:
    """`{path: sha256}` from a manifest file; a malformed line is an error naming it."""
    out: dict[str, str] = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        m = _LINE.match(line)
        if not m:
            raise ManifestError(f"{path}:{n}: not a `<sha256>  <path>` line; rerun the annotate stage")
        out[m.group(2)] = m.group(1)
    return out


def subset(hashes: Mapping[str, str], paths: Iterable[str], where: str) -> dict[str, str]:
    """The entries of `paths`, in their order; a path without a hash is an error (stale manifest)."""
    missing = [p for p in paths if p not in hashes]
    if missing:
        raise ManifestError(f"{where}: no content hash for {missing[0]!r}"
                            + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
                            + "; the manifest is older than the annotation lines: rerun the annotate stage")
    return {p: hashes[p] for p in paths}


def check_images(hashes: Mapping[str, str], paths: Iterable[str], where: str) -> None:
    """Fail when an image's bytes differ from its recorded hash (it changed after the annotate
    stage ran, so the results would not be those of the recorded data)."""
    paths = list(paths)
    expected = subset(hashes, paths, where)
    actual = hash_files(paths)
    changed = [p for p in paths if actual[p] != expected[p]]
    if changed:
        raise ManifestError(f"{changed[0]}" + (f" and {len(changed) - 1} more images" if len(changed) > 1 else "")
                            + f" changed since the annotate stage hashed them ({where}); rerun the pipeline "
                            "(dvc repro / snakemake) so every stage sees the same images")

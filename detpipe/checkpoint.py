"""Checkpoints: one plain dict, written atomically, loaded with weights_only=True.

A checkpoint holds model, ema, optimizer, scheduler, scaler, epoch, history, RNG state and the
params as plain dicts, so `torch.load(weights_only=True)` can read it and a file carrying a
pickled payload is refused instead of executed.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be used; the message says why and what to do."""


def save_atomic(obj: dict, path: str | Path) -> None:
    """torch.save to a temp file in the same folder, fsync, then rename over `path`.

    A kill at any moment leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint safely (weights_only=True) onto the CPU."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: refused to load: it is not a plain-tensor checkpoint ({str(exc).splitlines()[0]}). "
            "detpipe only loads files with weights_only=True, so pickled code is never run; "
            "use a checkpoint written by detpipe or torch.save(model.state_dict())") from None


def fingerprint(config: dict, files: list[str | Path]) -> str:
    """Hash of the params and input file contents that determine a training run."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for f in files:
        h.update(str(f).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def prune(stage_dir: str | Path, keep: int, current: str) -> list[Path]:
    """Keep the `keep` most recently used run folders of a stage (always the current one)."""
    stage_dir = Path(stage_dir)
    if not stage_dir.is_dir():
        return []
    runs = sorted((d for d in stage_dir.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime, reverse=True)
    others = [d for d in runs if d.name != current]
    removed = others[max(0, keep - 1):]
    for d in removed:
        shutil.rmtree(d, ignore_errors=True)
    return removed


def clean_temp_files(folder: str | Path) -> int:
    """Remove temp files left by a kill during save_atomic; returns how many."""
    folder = Path(folder)
    stale = list(folder.glob(".*.tmp")) if folder.is_dir() else []
    for f in stale:
        f.unlink(missing_ok=True)
    return len(stale)

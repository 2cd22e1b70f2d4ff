"""Checkpoints: one plain dict, written atomically, loaded with weights_only=True.

A checkpoint holds model, ema, optimizer, scheduler, scaler, epoch, history, RNG state and the
params as plain dicts, so `torch.load(weights_only=True)` can read it and a file carrying a
pickled payload is refused instead of executed.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from .. import atomic

CHECKSUM = "checksum"  # key of the content checksum in every checkpoint detpipe writes


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be used; the message says why and what to do, `reason` just why."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


def checksum(obj: Any) -> str:
    """sha256 of a checkpoint's content: every tensor's dtype, shape and bytes, every plain value.

    Computed on the dict itself (not the file), so it is stored inside the one plain dict and
    checked after torch.load: a flipped bit in any tensor or value gives another sum.
    """
    h = hashlib.sha256()
    _digest(obj, h)
    return "sha256:" + h.hexdigest()


def _digest(obj: Any, h) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for key, value in sorted(obj.items(), key=lambda kv: (type(kv[0]).__name__, repr(kv[0]))):
            _digest(key, h)
            _digest(value, h)
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for value in obj:
            _digest(value, h)
    else:  # str, int, float (repr round-trips), bool, None, torch.dtype
        h.update(f"{type(obj).__name__}:{obj!r};".encode())


def save_atomic(obj: dict, path: str | Path, keep_previous: str | Path | None = None) -> None:
    """torch.save `obj` plus its checksum to a temp file beside `path`, fsync, then rename over `path`.

    A kill at any moment leaves either the old file or the new one, never half of one.
    keep_previous: the file `path` held so far becomes this file first (a hard link, so both
    names exist at every instant). A failed write raises atomic.WriteError naming the path and
    the OS error; the files are then as they were.
    """
    body = {k: v for k, v in obj.items() if k != CHECKSUM}
    body[CHECKSUM] = checksum(body)
    path = Path(path)

    def rotate() -> None:
        if keep_previous is not None and path.exists():
            link_over(path, Path(keep_previous))

    atomic.write_atomic(path, lambda fh: torch.save(body, fh), rotate)


def link_over(src: Path, dst: Path) -> None:
    """Make `dst` the file `src` is, atomically (hard link to a temp name, rename)."""
    tmp = dst.with_name(f"{atomic.temp_prefix(dst)}link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # no hard links here: copy (slower, still atomic at the rename)
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def load(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint safely (weights_only=True) onto the CPU; verify its checksum if it has one."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    except Exception as exc:  # noqa: BLE001 - garbage bytes reach the unpickler's every error path
        why = _load_failure(exc)[:160]
        if Path(path).is_file() and Path(path).stat().st_size == 0:
            why = "the file is empty"
        raise CheckpointError(
            f"{path}: refused to load: it is not a plain-tensor checkpoint ({why}). "
            "detpipe only loads files with weights_only=True, so pickled code is never run; "
            "use a checkpoint written by detpipe or torch.save(model.state_dict())",
            f"unreadable ({why})") from None
    if isinstance(state, dict) and isinstance(state.get(CHECKSUM), str):
        if checksum({k: v for k, v in state.items() if k != CHECKSUM}) != state[CHECKSUM]:
            why = "checksum mismatch: the file changed after detpipe wrote it (a disk or copy error)"
            raise CheckpointError(f"{path}: {why}; rerun the stage that wrote it", why)
    return state


def _load_failure(exc: Exception) -> str:
    """The line of a torch.load error that says what is wrong (not torch's advice around it)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if lines and lines[0].startswith("Weights only load failed"):
        detail = [line for line in lines[1:] if not line.startswith(("Please file an issue", "Check the documentation"))]
        return "weights_only=True refused it: " + (atomic.first_line(detail[0]) if detail else "not tensors")
    return atomic.os_reason(exc)


def set_aside(path: str | Path) -> Path:
    """Rename an unusable checkpoint to <name>.bad-<UTC time> (kept for inspection, never loaded)."""
    path = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    bad = path.with_name(f"{path.name}.bad-{stamp}")
    n = 1
    while bad.exists():
        n += 1
        bad = path.with_name(f"{path.name}.bad-{stamp}-{n}")
    os.replace(path, bad)
    return bad

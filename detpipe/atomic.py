"""Atomic file writes: temp file in the same folder, fsync, rename; a kill leaves the old file or the new.

Each temp file names its writer (`.<target>.<pid>@<host>.<random>.tmp`), so cleaning removes only
the leftovers of writers that are gone: a parallel run writing into the same folder keeps its
file. A temp file whose writer cannot be checked (another host, an unknown name) is removed once
it is older than TEMP_GRACE_S. A failed write raises WriteError, one line naming the path and
the OS error, and leaves the target as it was.
"""
from __future__ import annotations

import errno
import glob
import os
import re
import socket
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Callable

TEMP_GRACE_S = 3600.0  # no write takes an hour: older temp files are leftovers whoever wrote them
_OWNER = re.compile(r"\.(\d+)@([A-Za-z0-9-]*)\.[A-Za-z0-9_]+\.tmp$")


class WriteError(RuntimeError):
    """A file could not be written; the message names the path and the OS error."""


def host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())


def temp_prefix(path: Path) -> str:
    """The start of a temp file name for `path` that names this writer (see clean_temp_files)."""
    return f".{path.name}.{os.getpid()}@{host()}."


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _writer_gone(tmp: Path, now: float) -> bool:
    """True when nobody can still be writing `tmp`."""
    try:
        age = now - tmp.stat().st_mtime
    except FileNotFoundError:
        return False
    if age > TEMP_GRACE_S:
        return True
    owner = _OWNER.search(tmp.name)
    return bool(owner) and owner[2] == host() and int(owner[1]) != os.getpid() and not pid_alive(int(owner[1]))


def clean_temp_files(folder: str | Path, target: str = "*") -> int:
    """Remove the temp files of `target` (a file name; * = any) left in `folder` by writers that are gone."""
    folder, now = Path(folder), time.time()
    pattern = f".{target if target == '*' else glob.escape(target)}.*.tmp"
    stale = [f for f in folder.glob(pattern) if _writer_gone(f, now)] if folder.is_dir() else []
    for f in stale:
        f.unlink(missing_ok=True)
    return len(stale)


def os_reason(exc: BaseException) -> str:
    """The OS error behind `exc` (torch wraps it in RuntimeErrors), as one line."""
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno:
            return f"{os.strerror(seen.errno)} ({errno.errorcode.get(seen.errno, seen.errno)})"
        seen = seen.__cause__ or seen.__context__
    return first_line(str(exc)) or type(exc).__name__


def first_line(text: str) -> str:
    """The first non-blank line of a message, without terminal colour codes (torch bolds words)."""
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines() if line.strip()]
    return lines[0] if lines else ""


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | Path, write: Callable[[BinaryIO], None],
                 before_replace: Callable[[], None] | None = None) -> None:
    """write(fh) into a temp file beside `path`, fsync, `before_replace()`, rename over `path`.

    Raises WriteError (path and OS reason) on an OS error; the target is then untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        clean_temp_files(path.parent, path.name)
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise WriteError(f"cannot write {path}: {os_reason(exc)}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except (OSError, RuntimeError) as exc:  # torch.save reports a failed write as a RuntimeError
        Path(tmp).unlink(missing_ok=True)
        raise WriteError(f"cannot write {path}: {os_reason(exc)}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    """Atomically replace a text file (UTF-8)."""
    write_atomic(path, lambda fh: fh.write(text.encode("utf-8")))

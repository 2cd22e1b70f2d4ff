"""One training process per run folder, and pruning that never deletes a folder in use.

A training process holds an exclusive flock on <run folder>/.lock while it trains; the kernel
drops it when the process ends, also on kill -9, so a crashed run never needs a manual unlock.
The holder writes its pid, host and command into the file, so a second process that would
train the same run (`dvc repro` and `snakemake` in one folder, two queue workers) can say who
holds it. Pruning deletes a folder only if it can take that lock itself and the folder was not
used for PRUNE_GRACE_S (a run just created, or on a filesystem where locks do not reach).
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..atomic import host, pid_alive

LOCK = ".lock"
PRUNE_GRACE_S = 3600.0  # a folder used this recently is kept whatever keep_checkpoints says
BUSY_WAIT_S = 5.0       # a pruner holds a folder's lock for a moment: retry this long before refusing
_DOOMED = ".pruning-"   # a folder being deleted is first renamed to .pruning-<name>-<pid>


class RunBusyError(RuntimeError):
    """Another process trains this run; the message names it and what to do."""


class _Gone(Exception):
    """The folder was renamed away (pruned) between opening its lock file and locking it."""


@dataclass
class RunLock:
    folder: Path
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the last descriptor drops the flock
            self.fd = -1

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _try_lock(folder: Path) -> int | None:
    """A descriptor holding the folder's lock; None if another process holds it."""
    path = folder / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError:  # a filesystem without locks: nothing to detect with, carry on unlocked
        return fd
    try:
        same = os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        same = False
    if not same:
        os.close(fd)
        raise _Gone
    return fd


def _command(pid: int | str) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()[:200]


def _holder(folder: Path) -> tuple[str, int | None]:
    """Who holds the folder's lock, as its holder wrote it, and its pid."""
    try:
        info = json.loads((folder / LOCK).read_text(encoding="utf-8"))
        pid = int(info["pid"])
        who = f"pid {pid} on {info['host']} since {info['since']} ({info['cmd']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process", None
    parent = f"; started by pid {info['leader']}: {info['leader_cmd']}" if info.get("leader_cmd") else ""
    return f"{who}{parent})", pid


def acquire(folder: str | Path, what: str, wait_s: float | None = None) -> RunLock:
    """Lock `folder` (created if missing) for this process, or raise RunBusyError naming the holder."""
    folder = Path(folder)
    deadline = time.monotonic() + (BUSY_WAIT_S if wait_s is None else wait_s)
    while True:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            fd = _try_lock(folder)
        except _Gone:
            continue  # pruned meanwhile: make it anew
        if fd is not None:
            break
        if time.monotonic() > deadline:
            who, pid = _holder(folder)
            stop = f"stop it (kill {pid})" if pid else "stop it"
            raise RunBusyError(f"{what}: {folder} is in use by {who}: one process trains a run at a time; "
                               f"wait for it to finish, or {stop}, then rerun this command")
        time.sleep(0.1)
    # The process group's leader is the command the user typed (dvc repro, snakemake) under a shell
    # with job control, and the tool itself when a script or a test starts it in its own session.
    leader = os.getpgid(0)
    info = {"pid": os.getpid(), "host": host(), "since": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "cmd": " ".join([Path(sys.executable).name, *sys.argv])[:200], "leader": leader,
            "leader_cmd": _command(leader) if leader != os.getpid() else ""}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    os.utime(folder)  # recently used, for pruning
    return RunLock(folder, fd)


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _delete_unless_locked(folder: Path) -> bool:
    """Delete `folder` if no process holds its lock (renamed first, so nobody starts in it meanwhile)."""
    try:
        fd = _try_lock(folder)
    except (_Gone, OSError):
        return False
    if fd is None:
        return False
    try:
        doomed = folder.with_name(f"{_DOOMED}{folder.name}-{os.getpid()}")
        os.rename(folder, doomed)
    except OSError:
        os.close(fd)
        return False
    shutil.rmtree(doomed, ignore_errors=True)
    os.close(fd)
    return True


def prune(stage_dir: str | Path, keep: int, current: str, grace_s: float | None = None) -> list[Path]:
    """Keep the `keep` most recently used run folders of a stage (always `current`); delete older ones
    unless a process holds them or they were used within grace_s. Returns the deleted folders."""
    stage_dir, now = Path(stage_dir), time.time()
    grace_s = PRUNE_GRACE_S if grace_s is None else grace_s
    if not stage_dir.is_dir():
        return []
    for left in stage_dir.glob(f"{_DOOMED}*"):  # a pruner killed mid-delete
        pid = left.name.rsplit("-", 1)[-1]
        if not (pid.isdigit() and pid_alive(int(pid))):
            shutil.rmtree(left, ignore_errors=True)
    runs = [(m, d) for d in stage_dir.iterdir()
            if d.is_dir() and not d.name.startswith(".") and d.name != current and (m := _mtime(d)) is not None]
    runs.sort(key=lambda md: md[0], reverse=True)
    return [d for m, d in runs[max(0, keep - 1):] if now - m >= grace_s and _delete_unless_locked(d)]

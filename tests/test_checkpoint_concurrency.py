"""Parallel runs sharing a checkpoint folder: locks, pruning and temp-file cleaning never hit a live run."""
import os
import signal
import subprocess
import sys
import time

import pytest

from detpipe import atomic
from detpipe.train import runlock
from tests.conftest import REPO

HOLD = """
import sys, time
from detpipe.train import runlock
lock = runlock.acquire(sys.argv[1], "holder")
print("locked", flush=True)
time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path):
    """Start a process that locks a folder and keeps it; yields (start(folder) -> Popen)."""
    procs = []

    def start(folder):
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), "--some-flag"], cwd=REPO,
                                env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "locked"
        procs.append(proc)
        return proc
    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _age(path, seconds):
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_temp_cleaning_spares_live_writers(tmp_path):
    live = subprocess.Popen(["sleep", "60"])
    try:
        host = atomic.host()
        files = {"live writer": f".last.pt.{live.pid}@{host}.abc123de.tmp",
                 "this process": f".last.pt.{os.getpid()}@{host}.abc123de.tmp",
                 "dead writer": f".last.pt.{_dead_pid()}@{host}.abc123de.tmp",
                 "other host": f".last.pt.{_dead_pid()}@elsewhere-{host}.abc123de.tmp",
                 "unknown writer": ".last.pt.abc123de.tmp",
                 "other target": f".frozen.tsv.{_dead_pid()}@{host}.abc123de.tmp"}
        for name in files.values():
            (tmp_path / name).write_bytes(b"half")
        assert atomic.clean_temp_files(tmp_path, "last.pt") == 1
        left = {what for what, name in files.items() if (tmp_path / name).exists()}
        assert left == set(files) - {"dead writer"}
        # Past the grace, nobody can still be writing: every leftover goes, whoever wrote it.
        for name in files.values():
            if (tmp_path / name).exists():
                _age(tmp_path / name, atomic.TEMP_GRACE_S + 60)
        assert atomic.clean_temp_files(tmp_path) == 5 and not list(tmp_path.iterdir())
    finally:
        live.kill()
        live.wait()


def test_a_held_run_folder_is_refused_with_the_holder_named_and_freed_by_kill_9(tmp_path, holder):
    run = tmp_path / "train_frozen" / "abc"
    proc = holder(run)
    with pytest.raises(runlock.RunBusyError) as err:
        runlock.acquire(run, "train_frozen", wait_s=0.3)
    msg = str(err.value)
    assert "\n" not in msg and f"pid {proc.pid}" in msg and "--some-flag" in msg and f"kill {proc.pid}" in msg
    assert msg.startswith(f"train_frozen: {run} is in use by")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with runlock.acquire(run, "train_frozen", wait_s=0) as lock:  # the kernel dropped the dead holder's lock
        assert lock.fd >= 0


def test_prune_never_deletes_a_folder_in_use_or_used_lately(tmp_path, holder):
    stage = tmp_path / "train_frozen"
    for name in ("current", "busy", "recent", "old1", "old2"):
        (stage / name).mkdir(parents=True)
    proc = holder(stage / "busy")
    for name, age in (("current", 9e5), ("busy", 9e5), ("recent", 60), ("old1", 8e5), ("old2", 7e5)):
        _age(stage / name, age)
    (stage / f".pruning-gone-{_dead_pid()}").mkdir()  # a pruner killed mid-delete
    removed = runlock.prune(stage, keep=1, current="current")
    assert sorted(p.name for p in removed) == ["old1", "old2"]
    assert sorted(p.name for p in stage.iterdir()) == ["busy", "current", "recent"]
    proc.kill()
    proc.wait()
    _age(stage / "recent", runlock.PRUNE_GRACE_S + 60)
    assert sorted(p.name for p in runlock.prune(stage, keep=1, current="current")) == ["busy", "recent"]


def test_a_folder_pruned_while_being_locked_is_made_anew(tmp_path, monkeypatch):
    run = tmp_path / "train_frozen" / "abc"
    run.mkdir(parents=True)
    (run / "last.pt").write_bytes(b"x")
    real, calls = runlock.fcntl.flock, []

    def flock(fd, op):  # a pruner renames the folder between our open() and flock()
        if not calls:
            os.rename(run, run.with_name(".pruning-abc-1"))
        calls.append(op)
        return real(fd, op)
    monkeypatch.setattr(runlock.fcntl, "flock", flock)
    with runlock.acquire(run, "train_frozen", wait_s=0) as lock:
        assert len(calls) == 2 and lock.folder == run and run.is_dir() and not (run / "last.pt").exists()
        assert os.fstat(lock.fd).st_ino == (run / runlock.LOCK).stat().st_ino

"""How many CPUs this process may use: the one answer for every choice of threads or workers.

os.cpu_count() counts the machine's CPUs, not the ones this process may run on. Under taskset,
SLURM or `docker --cpuset-cpus` the affinity mask is smaller; under a Kubernetes CPU limit or
`docker --cpus` a cgroup quota caps the CPU time. Threads beyond either only wait: an OpenMP thread
on a starved core stalls every parallel region it is part of (issue #16 measured 2 threads slower
than 1 next to one busy process on 2 cores).
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import Iterator

CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")


def usable_cpus(root: Path | None = None, self_cgroup: Path | None = None) -> int:
    """The CPUs of this process's affinity mask, capped by its cgroup CPU quota (rounded down: a
    thread more than the quota makes the kernel throttle them all), at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS and Windows have no affinity call
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota(root, self_cgroup)
    if quota is not None:
        cpus = min(cpus, math.floor(quota))
    return max(1, cpus)


def thread_placement(threads: int, cpus: set[int] | None = None) -> tuple[set[int], str] | None:
    """Where onnxruntime's `threads` intra-op threads run: the CPUs for the calling thread (the first
    of them) during a run, and `session.intra_op_thread_affinities` pinning each of the threads - 1
    workers to one of the last CPUs this process may run on (onnxruntime counts CPUs from 1). None
    with one thread, fewer CPUs than threads or no affinity call (macOS, Windows).

    Why: a worker sleeps between runs, and Linux wakes a sleeper next to its waker, so the worker
    spun on the core the calling thread computed on. A 2-thread forward pass at batch 1, 20 ms after
    the last one, took 12.5-13.5 ms instead of 7.0-8.0 with the workers pinned
    (bench/results/bench_ort_affinity.txt); the calling thread is kept off their CPUs during a run,
    as a pipe or a lock can wake it onto a worker's CPU (bench/bench_predict.py's detpipe process is
    woken by a pipe: with the workers pinned and the caller free, its batch-1 forward went up, not down).
    """
    if cpus is None:
        try:
            cpus = os.sched_getaffinity(0)
        except (AttributeError, OSError):
            return None
    ordered = sorted(cpus)
    if threads < 2 or len(ordered) < threads:
        return None
    split = len(ordered) - threads + 1
    return set(ordered[:split]), ";".join(str(cpu + 1) for cpu in ordered[split:])


@contextlib.contextmanager
def calling_thread_on(cpus: set[int] | None) -> Iterator[None]:
    """The calling thread runs on `cpus` (those of them it may use) within the block, on its own set
    again after: threads and processes it starts later inherit its affinity and must keep all of it.
    None: unchanged."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus & before or cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def threads_per_rank(local_world: int) -> int:
    """Torch threads for each of `local_world` processes on this machine (DDP ranks share its CPUs)."""
    return max(1, usable_cpus() // max(1, local_world))


def cgroup_cpu_quota(root: Path | None = None, self_cgroup: Path | None = None) -> float | None:
    """The tightest CPU quota, in CPUs, of this process's cgroups and their ancestors: cgroup v2
    `cpu.max` or v1 `cpu.cfs_quota_us / cpu.cfs_period_us`; None when none is set (or readable).
    `root` and `self_cgroup` default to the system's (CGROUP_ROOT, SELF_CGROUP)."""
    folders = _cgroup_folders(root or CGROUP_ROOT, self_cgroup or SELF_CGROUP)
    quotas = [q for folder in folders
              for q in (_v2_quota(folder), _v1_quota(folder)) if q is not None]
    return min(quotas, default=None)


def _cgroup_folders(root: Path, self_cgroup: Path) -> list[Path]:
    """This process's cgroup folders (v2, and v1's cpu controller) and their ancestors up to the
    mount. A container sees its own cgroup as the mount itself, so the mount always counts."""
    try:
        lines = self_cgroup.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    folders = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        controllers, path = parts[1], parts[2]
        if controllers == "":  # v2; a hybrid host mounts it at unified/
            mount = root if (root / "cgroup.controllers").exists() else root / "unified"
        elif "cpu" in controllers.split(","):
            mount = root / controllers
        else:
            continue
        folder = mount / path.lstrip("/")
        folders += [folder, *[p for p in folder.parents if p.is_relative_to(mount)]]
    return folders


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _v2_quota(folder: Path) -> float | None:
    text = _read(folder / "cpu.max")  # "max 100000" (no limit) or "150000 100000" (1.5 CPUs)
    fields = text.split() if text else []
    if len(fields) != 2 or fields[0] == "max" or not all(f.isdigit() for f in fields) or int(fields[1]) == 0:
        return None
    return int(fields[0]) / int(fields[1])


def _v1_quota(folder: Path) -> float | None:
    quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
    if not quota or not period or not quota.isdigit() or not period.isdigit() or int(period) == 0:
        return None  # -1: no limit
    return int(quota) / int(period)


# Busy CPUs: counted from /proc/stat, so the default thread count leaves out the cores other
# processes occupy when a run starts (issue #16: 2 threads next to one busy process ran at 0.27 of
# their quiet speed, 1 thread at ~1.0). Numerics depend on the thread count, so the count is chosen
# once, when a phase starts fresh, recorded in its checkpoints and reused on resume.
PROC_STAT = Path("/proc/stat")
SELF_STAT = Path("/proc/self/stat")
BUSY_WINDOW = 0.5  # seconds: long enough to see a busy process, short beside any training phase


def busy_jiffies(stat_text: str, cpus: set[int]) -> int:
    """Non-idle clock ticks (user, nice, system, irq, softirq, steal) of the `cpus` lines of /proc/stat."""
    total = 0
    for line in stat_text.splitlines():
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        ticks = [int(f) for f in fields[:8]] + [0] * (8 - len(fields[:8]))
        total += ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6] + ticks[7]  # not idle (3) or iowait (4)
    return total


def own_jiffies(self_stat_text: str) -> int:
    """utime + stime of /proc/<pid>/stat (all threads), read after the parenthesised command name."""
    fields = self_stat_text.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5), counted from the state field


def others_busy_cpus(cpus: set[int], window: float = BUSY_WINDOW, stat: Path = PROC_STAT,
                     self_stat: Path = SELF_STAT) -> float | None:
    """CPUs' worth of time other processes used on `cpus` (this process's affinity mask) during
    `window` seconds; None where /proc is missing (macOS, Windows) or unreadable."""
    try:
        before = busy_jiffies(stat.read_text(), cpus) - own_jiffies(self_stat.read_text())
        time.sleep(window)
        after = busy_jiffies(stat.read_text(), cpus) - own_jiffies(self_stat.read_text())
    except (AttributeError, OSError, ValueError, IndexError):
        return None
    return max(0.0, (after - before) / os.sysconf("SC_CLK_TCK") / window)


def training_threads(window: float = BUSY_WINDOW) -> tuple[int, str]:
    """Threads for a training phase that starts fresh with `train.threads: 0`, and why when fewer
    than usable_cpus(): one per usable CPU, minus the CPUs other processes keep busy right now."""
    usable = usable_cpus()
    try:
        affinity = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return usable, ""
    # Under a cgroup quota the CPUs of /proc/stat are the host's, shared with other containers
    # whose load says nothing about this container's share: the quota already bounds the count.
    if usable < 2 or usable < len(affinity):
        return usable, ""
    busy = others_busy_cpus(affinity, window)
    if busy is None:
        return usable, ""
    threads = max(1, usable - round(busy))
    if threads == usable:
        return usable, ""
    return threads, (f"{threads} of {usable} usable CPUs: other processes kept {busy:.1f} CPUs busy as this phase "
                     "started, and a thread sharing a core with them stalls every step; resuming keeps this "
                     "count (set train.threads to choose it)")

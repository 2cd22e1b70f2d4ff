"""How many CPUs this process may use: the one answer for every choice of threads or workers.

os.cpu_count() counts the machine's CPUs, not the ones this process may run on. Under taskset,
SLURM or `docker --cpuset-cpus` the affinity mask is smaller; under a Kubernetes CPU limit or
`docker --cpus` a cgroup quota caps the CPU time. Threads beyond either only wait: an OpenMP thread
on a starved core stalls every parallel region it is part of (issue #16 measured 2 threads slower
than 1 next to one busy process on 2 cores).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

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

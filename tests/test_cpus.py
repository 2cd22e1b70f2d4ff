"""`threads: 0` and every automatic worker count use the CPUs this process may run on: its
affinity mask, capped by a cgroup v2 or v1 CPU quota (faked here), shared across DDP ranks."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

from detpipe import cpus
from detpipe.train import distributed as ddp

REPO = Path(__file__).resolve().parents[1]


def fake_cgroup(tmp_path: Path, self_cgroup: str, files: dict[str, str]) -> tuple[Path, Path]:
    """A cgroup mount under tmp_path/cg with `files` (path -> content) and a /proc/self/cgroup."""
    root = tmp_path / "cg"
    root.mkdir()
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (tmp_path / "self").write_text(self_cgroup)
    return root, tmp_path / "self"


V1_SELF = "12:cpu,cpuacct:/slurm/job7\n4:memory:/slurm/job7\n0::/\n"
CASES = {
    # name: (affinity CPUs, /proc/self/cgroup, files, expected CPUs)
    "v2 quota 1.5 CPUs, rounded down": (8, "0::/kubepods/pod1\n", {
        "cgroup.controllers": "cpu", "cpu.max": "max 100000", "kubepods/pod1/cpu.max": "150000 100000"}, 1),
    "v2 parent tighter than child": (8, "0::/a/b\n", {
        "cgroup.controllers": "cpu", "a/cpu.max": "200000 100000", "a/b/cpu.max": "400000 100000"}, 2),
    "v2 no limit: the affinity mask": (3, "0::/a\n", {"cgroup.controllers": "cpu", "a/cpu.max": "max 100000"}, 3),
    "v2 container view (own cgroup at the mount)": (16, "0::/kubepods/burstable/pod9/ctr\n", {
        "cgroup.controllers": "cpu", "cpu.max": "400000 100000"}, 4),
    "v1 cfs quota 3 CPUs": (8, V1_SELF, {"cpu,cpuacct/slurm/job7/cpu.cfs_quota_us": "300000",
                                         "cpu,cpuacct/slurm/job7/cpu.cfs_period_us": "100000"}, 3),
    "v1 quota above the affinity mask (taskset -c 0,1)": (2, V1_SELF, {
        "cpu,cpuacct/slurm/job7/cpu.cfs_quota_us": "600000", "cpu,cpuacct/slurm/job7/cpu.cfs_period_us": "100000"}, 2),
    "v1 quota -1 on a hybrid host: the affinity mask": (6, "1:cpu:/\n0::/\n", {
        "cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000", "unified/cpu.stat": ""}, 6),
    "quota below one CPU still gives one thread": (4, "0::/\n", {"cgroup.controllers": "", "cpu.max": "50000 100000"}, 1),
    "no cgroup file at all": (5, "", {}, 5),
}


@pytest.mark.parametrize("name", list(CASES))
def test_usable_cpus_honours_affinity_and_quota(name, tmp_path, monkeypatch):
    affinity, self_cgroup, files, expected = CASES[name]
    root, self_file = fake_cgroup(tmp_path, self_cgroup, files)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(affinity)))
    assert cpus.usable_cpus(root, self_file) == expected


def test_ddp_ranks_share_the_usable_cpus(tmp_path, monkeypatch):
    """Under DDP each of the node's ranks gets its share of the usable CPUs, not of cpu_count()."""
    root, self_file = fake_cgroup(tmp_path, "0::/job\n", {"cgroup.controllers": "cpu", "job/cpu.max": "600000 100000"})
    monkeypatch.setattr(cpus, "CGROUP_ROOT", root)
    monkeypatch.setattr(cpus, "SELF_CGROUP", self_file)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert [cpus.threads_per_rank(n) for n in (1, 2, 4, 8)] == [6, 3, 1, 1]
    monkeypatch.setattr(ddp, "init", lambda device_type: ddp.DistInfo(rank=1, world=2, local_rank=1))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    before = torch.get_num_threads()
    try:
        from detpipe.params import TrainParams
        ddp.start(torch.device("cpu"), TrainParams(threads=0), 4, "train_frozen")
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_no_other_code_counts_cpus():
    """detpipe.cpus is the one place that counts CPUs: library, stages and benches."""
    offenders = []
    for path in [*(REPO / "detpipe").rglob("*.py"), *(REPO / "stages").glob("*.py"), *(REPO / "bench").glob("*.py")]:
        if path == REPO / "detpipe" / "cpus.py":
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if '"cpu_count": os.cpu_count()' in line:  # a bench report's record of the machine, not a choice
                continue
            if re.search(r"\bcpu_count\(|sched_getaffinity", line):
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not offenders, "count CPUs with detpipe.cpus.usable_cpus():\n" + "\n".join(offenders)


STAT = ("cpu  300 0 60 900 10 0 5 0 0 0\ncpu0 100 0 20 300 5 0 1 0 0 0\ncpu1 150 0 30 300 5 0 2 0 0 0\n"
        "cpu2 50 0 10 300 0 0 2 0 0 0\nintr 1 2 3\nctxt 99\n")
SELF = "4242 (python (x) 1) R 1 2 3 4 5 6 7 8 9 10 {u} {s} 0 0 20 0 3 0\n"


def test_busy_and_own_jiffies_read_proc_formats():
    assert cpus.busy_jiffies(STAT, {0, 1}) == (100 + 20 + 1) + (150 + 30 + 2)  # idle and iowait are not busy
    assert cpus.busy_jiffies(STAT, {2}) == 62
    assert cpus.own_jiffies(SELF.format(u=70, s=5)) == 75  # a ')' inside the command name is no field


def test_others_busy_cpus_leaves_out_this_process(tmp_path, monkeypatch):
    """Over the window the CPUs gained 2 busy ticks per tick of wall time... of which this process used 1."""
    stat, me = tmp_path / "stat", tmp_path / "self"
    stat.write_text(STAT)
    me.write_text(SELF.format(u=70, s=5))
    hz = os.sysconf("SC_CLK_TCK")

    def sleep(seconds):  # the counters move while the window elapses: +2 CPUs busy, +1 of them ours
        stat.write_text(STAT.replace("cpu0 100", f"cpu0 {100 + int(hz * seconds)}")
                        .replace("cpu1 150", f"cpu1 {150 + int(hz * seconds)}"))
        me.write_text(SELF.format(u=70 + int(hz * seconds), s=5))
    monkeypatch.setattr(cpus.time, "sleep", sleep)
    assert cpus.others_busy_cpus({0, 1}, window=1.0, stat=stat, self_stat=me) == pytest.approx(1.0)
    assert cpus.others_busy_cpus({0, 1}, window=1.0, stat=tmp_path / "missing", self_stat=me) is None


@pytest.mark.parametrize("affinity, usable, busy, want", [
    (2, 2, 1.0, 1), (2, 2, 0.4, 2), (4, 4, 2.6, 1), (4, 4, 9.0, 1), (8, 8, 0.0, 8),
    (4, 2, 3.0, 2),  # a cgroup quota binds: the host's /proc/stat is not this container's share
    (1, 1, 1.0, 1), (2, 2, None, 2)])
def test_training_threads_leave_out_cpus_other_processes_keep_busy(affinity, usable, busy, want, monkeypatch):
    monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda pid: set(range(affinity)))
    monkeypatch.setattr(cpus, "usable_cpus", lambda: usable)
    seen = []
    monkeypatch.setattr(cpus, "others_busy_cpus", lambda mask, window=0: seen.append(mask) or busy)
    threads, why = cpus.training_threads()
    assert all(mask == set(range(affinity)) for mask in seen)  # measured on the affinity mask it read
    assert threads == want
    assert (why != "") == (want < usable) and (not why or "train.threads" in why)


@pytest.mark.skipif(cpus.usable_cpus() < 2, reason="needs 2 CPUs: one for the busy process, one for the test")
def test_a_real_busy_process_is_seen():
    import subprocess
    import sys
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert cpus.others_busy_cpus(os.sched_getaffinity(0), window=0.5) >= 0.6
    finally:
        spinner.kill()
        spinner.wait()


def test_onnxruntime_workers_are_pinned_one_per_cpu_on_the_last_cpus():
    """onnxruntime's workers (threads - 1; the caller is the first thread) each get one CPU of the
    process's set, the last ones, numbered from 1 as onnxruntime counts; the caller gets the rest;
    no pinning where it cannot work."""
    assert cpus.thread_placement(2, {0, 1}) == ({0}, "2")
    assert cpus.thread_placement(4, set(range(8))) == ({0, 1, 2, 3, 4}, "6;7;8")
    assert cpus.thread_placement(3, {8, 3, 5}) == ({3}, "6;9")  # taskset -c 3,5,8: the set's own CPUs
    assert cpus.thread_placement(1, {0, 1}) is None
    assert cpus.thread_placement(4, {0, 1}) is None  # more threads than CPUs: nothing to give each its own
    mine = sorted(os.sched_getaffinity(0))
    expected = None if len(mine) < 2 else (set(mine[:-1]), str(mine[-1] + 1))
    assert cpus.thread_placement(2) == expected

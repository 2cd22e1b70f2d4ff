"""Scale-out plumbing: DVC's experiment queue with 2 parallel workers, the SLURM profile, the DAG's parallelism.

The queue test runs the real pipeline twice in parallel on the tiny project of test_e2e, with
checkpoints under an absolute DETPIPE_CKPT_DIR (queued experiments run in temp copies of the repo).
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import time

import pytest
import yaml

from tests.test_e2e import BIN, make_repo, run

pytestmark = pytest.mark.timeout(900)


def test_queued_experiments_run_two_at_a_time_with_their_own_checkpoints(tmp_path):
    repo = make_repo(tmp_path, "queue")
    ckpts = tmp_path / "ckpts"  # absolute and outside the repo: survives the queue's temp dirs
    os.environ["DETPIPE_CKPT_DIR"] = str(ckpts)  # run() passes os.environ on, so the workers see it
    try:
        for lr in ("0.02", "0.005"):
            run(["dvc", "exp", "run", "--queue", "-S", f"lr={lr}"], repo)
        start = time.monotonic()
        run(["dvc", "queue", "start", "-j", "2"], repo)
        status = ""
        while time.monotonic() - start < 600:
            status = run(["dvc", "queue", "status"], repo).stdout
            if not re.search(r"\b(Queued|Running)\b", status):
                break
            time.sleep(2)
        print(f"queue of 2 experiments, 2 workers: {time.monotonic() - start:.0f} s\n{status}")
        assert status.count("Success") == 2, status
    finally:
        os.environ.pop("DETPIPE_CKPT_DIR")
        run(["dvc", "queue", "stop"], repo, check=False)
    shown = json.dumps(json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout))
    assert '"lr": 0.02' in shown and '"lr": 0.005' in shown and "map50_95" in shown
    # Different params, different fingerprints: the parallel runs never shared a checkpoint.
    for phase in ("train_frozen", "train_unfrozen"):
        runs = [d for d in (ckpts / phase).iterdir() if (d / "last.pt").is_file()]
        assert len(runs) == 2, runs
    assert not (repo / ".ckpt").exists()


def _dot_edges(dot: str) -> dict[str, set[str]]:
    """Rule graph from `snakemake --rulegraph`: rule -> the rules it feeds."""
    names = dict(re.findall(r'^\s*(\d+)\[label = "([^"]+)"', dot, re.M))
    edges: dict[str, set[str]] = {n: set() for n in names.values()}
    for a, b in re.findall(r"^\s*(\d+) -> (\d+)", dot, re.M):
        edges[names[a]].add(names[b])
    return edges


def _downstream(edges: dict[str, set[str]], rule: str) -> set[str]:
    seen, todo = set(), [rule]
    while todo:
        for nxt in edges[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_slurm_profile_dry_run_and_parallel_dag(tmp_path):
    repo = make_repo(tmp_path, "slurm")
    profile = yaml.safe_load((repo / "profiles/slurm/config.yaml").read_text(encoding="utf-8"))
    assert profile["executor"] == "slurm" and profile["default-resources"]["runtime"] > 0
    # The executor plugin is a cluster-side install (not in requirements.txt); without it the
    # profile is dry-run with the executor overridden, which still parses every other setting.
    have_plugin = importlib.util.find_spec("snakemake_executor_plugin_slurm") is not None
    # annotate, split and pretrained are checkpoints (Snakemake plans what follows them once they
    # have run), so a dry run shows the whole plan once the data stages exist: run them first.
    run(["snakemake", "--cores", "1", "data/splits/train.txt", "models/pretrained.json"], repo)
    cmd = ["snakemake", "-n", "--profile", "profiles/slurm"] + ([] if have_plugin else ["--executor", "local"])
    proc = run(cmd, repo)
    out = proc.stdout + proc.stderr
    assert "Using profiles profiles/slurm" in out and "This was a dry-run" in out
    train = [ln for ln in out.splitlines() if "resources:" in ln and "gpu=" in ln]
    assert len(train) == 2 and all("runtime=360" in ln and "slurm_partition=gpu" in ln for ln in train), out
    assert out.count("runtime=30") >= 5  # predict, map, overfit, report and `all` ask for little
    # The DAG as the stage table declares it: predict -> map -> overfit (the advice reads the
    # map's AP by object size) -> report, all after training; nothing feeds back.
    edges = _dot_edges(run(["snakemake", "--rulegraph"], repo).stdout)
    assert {"predict", "map", "overfit"} <= _downstream(edges, "train_unfrozen")
    assert {"map", "overfit"} <= _downstream(edges, "predict") and "predict" not in _downstream(edges, "overfit")
    assert BIN

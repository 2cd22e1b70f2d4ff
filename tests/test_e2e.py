"""The real pipeline, end to end, under DVC and Snakemake, on a tiny dataset in a temporary git repo."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scripts.tiny_repo import make_tiny_repo

pytestmark = pytest.mark.timeout(900)
BIN = str(Path(sys.executable).parent)


def run(cmd: list[str], cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"], "DVC_NO_ANALYTICS": "1", **(env or {})}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def make_repo(tmp: Path, name: str) -> Path:
    """A git repo holding the project's files, a tiny generated dataset and tiny params."""
    return make_tiny_repo(tmp / name)


def declared_outputs(repo: Path) -> list[str]:
    stages = yaml.safe_load((repo / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    paths = []
    for stage in stages.values():
        for kind in ("outs", "metrics"):
            for item in stage.get(kind, []):
                paths.append(next(iter(item)) if isinstance(item, dict) else item)
    return paths


def test_dvc_repro_then_exp_run(tmp_path):
    repo = make_repo(tmp_path, "dvc")
    out = run(["dvc", "repro"], repo).stdout
    for path in declared_outputs(repo):
        assert (repo / path).exists(), f"dvc repro did not write {path}"
    metrics = json.loads((repo / "reports/map/metrics.json").read_text())
    assert 0.0 <= metrics["map50"] <= 1.0 and 0.0 <= metrics["map50_95"] <= 1.0
    assert "train_frozen: starting fresh" in out and "== predict" in out
    index = (repo / "reports/index.md").read_text(encoding="utf-8")
    assert "overfitting" in index.lower() and "mAP" in index

    headline = json.loads((repo / "reports/metrics.json").read_text())
    assert headline["map50"] == metrics["map50"] and headline["verdict"] in index

    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline run"], repo)
    # The same run again (every stage forced; training resumes its finished checkpoint): the
    # metrics file holds no timings or settings, so DVC sees no difference at all.
    run(["dvc", "repro", "-f"], repo)
    assert run(["dvc", "metrics", "diff"], repo).stdout.strip() == ""
    baseline_lr = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))["lr"]
    run(["dvc", "exp", "run", "-S", "lr=1e-4"], repo)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    text = json.dumps(shown)
    assert baseline_lr != 1e-4 and f'"lr": {baseline_lr}' in text and '"lr": 0.0001' in text
    assert "map50_95" in text
    # The comparison the README shows, in a 120-column terminal: every run's mAP50 and mAP50-95
    # in full, and lr, the param that differs (the `.*/` columns are deps: dropped).
    table = run(["dvc", "exp", "show", "--no-pager", "--only-changed", "--drop", ".*/|Created", "--keep", "map50"],
                repo, env={"COLUMNS": "120"}).stdout
    lines = table.splitlines()
    header = next(line for line in lines if "Experiment" in line).split()
    assert {"map50", "map50_95", "lr"} <= set(header) and header.index("map50") < header.index("lr"), table
    assert max(map(len, lines)) <= 120, table
    assert any(str(baseline_lr) in line for line in lines) and any("0.0001" in line for line in lines), table
    # `detpipe compare`: the same runs in one table, without options, headline metrics first.
    compared = run([sys.executable, "-m", "detpipe", "compare"], repo, env={"COLUMNS": "120"}).stdout
    rows = compared.splitlines()
    assert max(map(len, rows)) <= 120 and "" not in rows, compared  # one block: nothing wrapped below
    dashes = next(i for i, row in enumerate(rows) if row.startswith("---"))
    spans = [(m.start(), m.end()) for m in re.finditer(r"-+", rows[dashes])]
    grid = [[row[a:b].strip() for a, b in spans] for row in [rows[dashes - 1]] + rows[dashes + 1:]]
    header, body = grid[0], {cells[0]: dict(zip(grid[0], cells)) for cells in grid[1:]}
    assert header[:4] == ["run", "rev", "mAP50", "mAP50-95"] and "lr" in header, compared
    head = run(["git", "rev-parse", "--short=7", "HEAD"], repo).stdout.strip()
    base = next(cells for cells in body.values() if cells["rev"] == head)
    exp = next(cells for name, cells in body.items() if name != "workspace" and cells["rev"] != head)
    exp_map = json.loads((repo / "reports/metrics.json").read_text())["map50"]  # the workspace holds the exp's
    assert exp["mAP50"] == f"{exp_map:.4f}" and base["mAP50"] == f"{headline['map50']:.4f}", compared
    assert exp["lr"] == "0.0001" and base["lr"] == str(baseline_lr), compared


def test_snakemake_map(tmp_path):
    repo = make_repo(tmp_path, "smk")
    run(["snakemake", "--cores", "1", "map"], repo)
    for path in ["data/annotations.txt", "data/splits/train.txt", "models/best.pt", "models/last.pt",
                 "reports/train/frozen.tsv", "reports/train/unfrozen.tsv", "data/detections/test.csv",
                 "reports/map/metrics.json", "reports/predictions/grid.jpg"]:
        assert (repo / path).exists(), path
    assert not (repo / "reports/index.md").exists()
    lint = run(["snakemake", "--lint"], repo)
    assert "Congratulations" in lint.stdout + lint.stderr

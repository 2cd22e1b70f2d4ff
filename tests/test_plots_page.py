"""`dvc plots show` and `dvc plots diff` draw every chart of dvc.yaml's top-level plots with no
network: the page template carries vega, vega-lite and vega-embed inline (.dvc/plots_page.html),
checked in headless Chromium on real DVC output."""
from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from detpipe.artifacts.history import COLUMNS, EpochRow, write_history
from detpipe.pipeline.table import METRICS, PLOTS, STAGES
from detpipe.metrics.flat import from_lists
from detpipe.reports.map_report import write_reports
from tests.browser import check_page, find_chromium, screenshot
from tests.conftest import REPO

BIN = str(Path(sys.executable).parent)
CLASSES = ["circle", "square", "triangle"]


def _declared() -> set[str]:
    return {o.path for s in STAGES for o in s.outs}


def test_metrics_and_plots_come_from_declared_outputs_and_name_real_columns():
    declared = _declared()
    assert set(METRICS) <= declared
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))
    assert not any("plots" in s for s in dvc["stages"].values())  # top-level plots only
    for entry in PLOTS:
        (name, props), = entry.items()
        assert {"x", "y", "title", "template"} <= set(props), name
        template = props["template"]
        assert template in ("simple", "linear") or (REPO / ".dvc" / "plots" / f"{template}.json").is_file(), name
        for source, columns in props["y"].items():
            assert source in declared, (name, source)
            if source.startswith("reports/train/"):  # the training history's columns have one owner
                assert {props["x"], *np.atleast_1d(columns)} <= set(COLUMNS), (name, columns)


def test_page_template_is_configured_and_current():
    config = configparser.ConfigParser()
    config.read(REPO / ".dvc" / "config")
    assert config['plots']['html_template'] == "plots_page.html"
    page = (REPO / ".dvc" / "plots_page.html").read_text(encoding="utf-8")
    assert "{plot_divs}" in page and "{scripts}" not in page and "cdn." not in page.lower()
    sys.path.insert(0, str(REPO))
    from scripts.make_plots_page import render
    assert page == render(), "rerun `python scripts/make_plots_page.py` (vl-convert-python changed)"


def _dvc(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"], "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run(["dvc", *args], cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert done.returncode == 0 and "failed to load" not in done.stderr.lower(), done.stdout + done.stderr
    return done.stdout


def _run_outputs(repo: Path, seed: int) -> None:
    """What a run leaves for the plots, written by the real writers: both training histories and
    the map stage's tables (from detections scattered around the ground truth)."""
    rng = np.random.default_rng(seed)
    for phase, epochs in (("frozen", range(1, 4)), ("unfrozen", range(4, 16))):
        rows = []
        for e in epochs:
            loss = 1 + 3 * np.exp(-e / 4) + rng.normal(0, 0.05)
            rows.append(EpochRow(epoch=e, phase=phase, train_loss=loss, val_loss=loss * 1.1, val_map50=1 - np.exp(-e / 5),
                                 val_map50_95=0.6 * (1 - np.exp(-e / 5)), val_precision=0.8, val_recall=0.7, lr=0.01,
                                 seconds=3.0, val_seconds=0.5, images_per_s=40.0, mosaic=e <= 10, train_box_loss=loss / 2,
                                 train_cls_loss=loss / 4, val_box_loss=loss / 2, val_cls_loss=loss / 4))
        write_history(repo / f"reports/train/{phase}.tsv", rows)
    gts, dets = [], []
    for _ in range(30):
        boxes = np.tile(rng.uniform(0, 200, (4, 2)), 2) + np.array([0, 0, 40, 40])
        labels = rng.integers(0, len(CLASSES), 4)
        gts.append({"boxes": boxes, "labels": labels, "difficult": np.zeros(4, bool)})
        keep = rng.random(4) < 0.8
        dets.append({"boxes": boxes[keep] + rng.normal(0, 4, (keep.sum(), 4)), "labels": labels[keep],
                     "scores": rng.uniform(0.05, 1, keep.sum())})
    write_reports(repo / "reports/map", from_lists(gts, dets), CLASSES, plots=False)


@pytest.fixture
def chromium():
    path = find_chromium()
    if path is None:
        if os.environ.get("DETPIPE_REQUIRE_CHROMIUM"):
            pytest.fail("DETPIPE_REQUIRE_CHROMIUM is set but no Chromium is on PATH (apt-get install -y chromium)")
        pytest.skip("no Chromium on PATH (Debian: apt-get install -y chromium); .ci/run installs it")
    return path


def test_plots_show_and_diff_draw_every_chart_offline(tmp_path, chromium):
    repo = tmp_path / "repo"
    for name in ("dvc.yaml", "params.yaml", ".dvc/config", ".dvc/plots_page.html", ".dvc/.gitignore",
                 *(p.relative_to(REPO).as_posix() for p in (REPO / ".dvc" / "plots").glob("*.json"))):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, repo / name)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    _run_outputs(repo, seed=1)
    _dvc(["plots", "show", "-o", "shown"], repo)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "run 1"], cwd=repo, check=True)
    _run_outputs(repo, seed=2)
    _dvc(["plots", "diff", "HEAD", "-o", "diffed"], repo)

    names = [next(iter(p)) for p in PLOTS]
    for page in (repo / "shown" / "index.html", repo / "diffed" / "index.html"):
        html = page.read_text(encoding="utf-8")
        assert "<script src=" not in html  # nothing to fetch: the libraries are inline
        got = check_page(page, chromium)
        assert got["vegaEmbed"] == "function" and got["errors"] == [] and got["external"] == [], got
        assert sorted(c["id"] for c in got["charts"]) == sorted(names), got
        for chart in got["charts"]:
            assert chart["svg"] or chart["canvas"], chart
            assert chart["marks"] > 0, chart
    shot = screenshot(repo / "diffed" / "index.html", tmp_path / "plots.png", chromium)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

"""A throwaway copy of this project with a tiny generated dataset and params that train in seconds.

The end-to-end tests (tests/test_e2e.py and the tests built on it), scripts/rerun_matrix.py and
scripts/same_results.py all run the real pipeline on this one recipe, so a change to it reaches
every one of them.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from scripts.synth import generate

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = "data/VOCdevkit/VOC2007"


def tiny_params(root: str, source: Path = REPO, **train) -> dict:
    """`source`'s params.yaml made seconds-long: a small backbone, imgsz 96, one epoch per phase, one thread."""
    params = yaml.safe_load((source / "params.yaml").read_text(encoding="utf-8"))
    params["data"]["root"] = root
    params["model"].update(imgsz=96, neck_channels=16, backbone="shufflenet_v2_x0_5")
    params["train"].update({"freeze_epochs": 1, "unfreeze_epochs": 1, "freeze_batch_size": 4,
                            "unfreeze_batch_size": 4, "num_workers": 0, "threads": 1, **train})
    params["predict"]["samples"] = 2
    return params


def make_tiny_repo(dest: Path, source: Path = REPO) -> Path:
    """A git repo at `dest` holding the files git lists in `source` (minus data, reports and models),
    a 30-image generated dataset and tiny_params; committed, so DVC and Snakemake see a clean tree."""
    files = _git(["ls-files", "-co", "--exclude-standard"], source).splitlines()
    for f in files:
        if f.startswith(("data/", "reports/", "models/")) or not (source / f).is_file():
            continue
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        (dest / f).write_bytes((source / f).read_bytes())
        (dest / f).chmod((source / f).stat().st_mode)
    generate(dest / "data", n_images=30, seed=5, style="shapes", min_size=64, max_size=128)
    params = tiny_params(DATA_ROOT, source)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    for cmd in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny"]):
        _git(cmd, dest)
    return dest


def _git(args: list[str], cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True,
                          stdin=subprocess.DEVNULL).stdout

"""What reruns after an edit, under both orchestrators, on a tiny real pipeline.

The promise: a change reruns exactly the stages whose results it changes. Pixels are an input
(through the image hashes), library code is an input (through each stage's import closure), and a
change that leaves a stage's outputs as they were stops there (DVC compares hashes; Snakemake
compares the content of inputs it recorded). `scripts/rerun_matrix.py` prints the full table.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.test_e2e import make_repo, run

pytestmark = pytest.mark.timeout(1200)
ALWAYS = {"pretrained"}  # DVC runs it on every repro: it hashes the starting weights (cheap)


LOG: dict[Path, str] = {}


def dvc_ran(repo: Path) -> set[str]:
    """Stages `dvc repro` ran (its output is kept in LOG)."""
    LOG[repo] = run(["dvc", "repro"], repo).stdout
    return set(re.findall(r"Running stage '([^']+)'", LOG[repo])) - ALWAYS


def smk_ran(repo: Path) -> set[str]:
    """Rules `snakemake --cores 1` ran (their logs are under logs/)."""
    proc = run(["snakemake", "--cores", "1"], repo)
    ran = set(re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):", proc.stdout + proc.stderr, re.M)) - {"all"}
    LOG[repo] = "".join((repo / "logs" / f"{r}.log").read_text(encoding="utf-8") for r in sorted(ran))
    return ran


def change_pixels(repo: Path, split: str) -> str:
    """Brighten a patch of the first image of `split` (same name, same boxes)."""
    first = (repo / "data" / "splits" / f"{split}.txt").read_text(encoding="utf-8").splitlines()[0]
    path = repo / first.split(" ")[0]
    rgb = np.asarray(Image.open(path).convert("RGB")).copy()
    rgb = 255 - rgb   # a negative: every detection on it changes
    Image.fromarray(rgb).save(path, quality=95)
    return first.split(" ")[0]


def append_comment(repo: Path, rel: str) -> None:
    with open(repo / rel, "a", encoding="utf-8") as fh:
        fh.write("\n# an edit\n")


TRAINING = {"train_frozen", "train_unfrozen"}
AFTER_TRAINING = {"predict", "map", "overfit", "report"}


@pytest.mark.parametrize("tool", ["dvc", "snakemake"])
def test_each_change_reruns_exactly_what_it_changes(tmp_path, tool):
    repo = make_repo(tmp_path, tool)
    again = dvc_ran if tool == "dvc" else smk_ran
    first = again(repo)
    assert {"annotate", "split"} | TRAINING | AFTER_TRAINING <= first
    assert again(repo) == set(), "a second run with nothing changed must run nothing"

    # overfit reads the test split's metrics as well (its advice quotes AP by object size): it reruns
    # when they changed (DVC: their content; Snakemake: the map stage rewrote them)
    metrics = repo / "reports" / "map" / "metrics.json"
    before = metrics.read_bytes()
    change_pixels(repo, "test")              # a test image: no training, the test results redone
    ran = again(repo)
    rewritten = tool == "snakemake" or metrics.read_bytes() != before
    assert ran == {"annotate", "split", "predict", "map", "report"} | ({"overfit"} if rewritten else set())

    before = metrics.read_bytes()
    append_comment(repo, "detpipe/infer/predictor.py")   # prediction code only
    ran = again(repo)
    assert "predict" in ran and not ran & ({"annotate", "split"} | TRAINING)
    assert ("overfit" in ran) == ("map" in ran and (tool == "snakemake" or metrics.read_bytes() != before))

    change_pixels(repo, "train")             # a training image: both phases train anew
    ran = again(repo)
    assert {"annotate", "split"} | TRAINING <= ran
    assert "train_frozen: starting fresh" in LOG[repo] and "resuming" not in LOG[repo]

    set_param(repo, "train", "threads", 2)   # speed only: the phases resume with nothing to train
    ran = again(repo)
    assert TRAINING <= ran and "starting fresh" not in LOG[repo]
    if tool == "dvc":   # the same weights, byte for byte, so nothing after training reruns
        assert ran == TRAINING | {"overfit"}  # overfit declares the train section (its advice quotes it)


def set_param(repo: Path, section: str, key: str, value) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert params[section][key] != value, f"pick another value than the test repo's {section}.{key}"
    params[section][key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")

"""Which stages rerun after each kind of edit, under `dvc repro` and under `snakemake --cores 1`.

    python scripts/rerun_matrix.py [--out reports/bench/rerun_matrix.md]

Builds two copies of this repo with a tiny generated dataset and tiny params (seconds per
training), runs each tool once, then applies the edits below one after another — a pixel change
in a training image and in a test image, an edit of detpipe/data/images.py and detpipe/infer/predictor.py,
and one params change in each section — rerunning the tool after each and recording the stages it
ran. Prints a Markdown table (also written to --out). tests/test_reruns.py asserts the key rows.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts.tiny_repo import make_tiny_repo  # noqa: E402
BIN = str(Path(sys.executable).parent)
ENV = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"], "DVC_NO_ANALYTICS": "1"}
ALWAYS = {"pretrained"}  # DVC runs it on every repro (it hashes the starting weights file)


def sh(cmd: list[str], cwd: Path) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env={**ENV, "PYTHONPATH": str(cwd)}, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr


def ran(tool: str, repo: Path) -> list[str]:
    if tool == "dvc":
        out = sh(["dvc", "repro"], repo)
        names = set(re.findall(r"Running stage '([^']+)'", out)) - ALWAYS
    else:
        out = sh(["snakemake", "--cores", "1"], repo)
        names = set(re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):", out, re.M)) - {"all"}
    order = ["annotate", "split", "pretrained", "train_frozen", "train_unfrozen", "predict", "map", "overfit", "report"]
    trained = "starting fresh" in out
    return [n for n in order if n in names] + (["(trained)"] if trained else [])


def pixels(split: str):
    def change(repo: Path) -> None:
        line = (repo / "data" / "splits" / f"{split}.txt").read_text(encoding="utf-8").splitlines()[0]
        path = repo / line.split(" ")[0]
        rgb = 255 - np.asarray(Image.open(path).convert("RGB"))
        Image.fromarray(rgb).save(path, quality=95)
    return change


def comment(rel: str):
    def change(repo: Path) -> None:
        with open(repo / rel, "a", encoding="utf-8") as fh:
            fh.write("\n# edited\n")
    return change


def param(dotted: str, value):
    def change(repo: Path) -> None:
        doc = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
        node = doc
        *head, last = dotted.split(".")
        for part in head:
            node = node[part]
        node[last] = value
        (repo / "params.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return change


EDITS = [
    ("pixels of a training image", pixels("train")),
    ("pixels of a test image", pixels("test")),
    ("edit detpipe/data/images.py", comment("detpipe/data/images.py")),
    ("edit detpipe/infer/predictor.py", comment("detpipe/infer/predictor.py")),
    ("lr", param("lr", 0.002)),
    ("seed", param("seed", 1)),
    ("data.skip_bad_files", param("data.skip_bad_files", True)),
    ("split.max_shift", param("split.max_shift", 0.3)),
    ("model.imgsz", param("model.imgsz", 128)),
    ("train.hflip", param("train.hflip", 0.3)),
    ("train.threads (speed only)", param("train.threads", 2)),
    ("predict.confidence", param("predict.confidence", 0.4)),
    ("predict.nms_iou", param("predict.nms_iou", 0.5)),
    ("map.min_overlap", param("map.min_overlap", 0.55)),
    ("overfit.gap_ratio", param("overfit.gap_ratio", 0.3)),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="reports/bench/rerun_matrix.md")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repos = {tool: make_tiny_repo(Path(tmp) / tool) for tool in ("dvc", "snakemake")}
        for tool, repo in repos.items():
            ran(tool, repo)
            assert not [r for r in ran(tool, repo) if r != "(trained)"], f"{tool}: a second run reran something"
        rows = ["| edit | dvc repro | snakemake --cores 1 |", "|---|---|---|"]
        for name, change in EDITS:
            cells = []
            for tool, repo in repos.items():
                change(repo)
                cells.append(", ".join(ran(tool, repo)) or "nothing")
            rows.append(f"| {name} | {cells[0]} | {cells[1]} |")
            print(rows[-1], flush=True)
    text = "\n".join(rows) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text, encoding="utf-8")
    print(f"\n{text}\n(wrote {args.out}; `pretrained` runs on every dvc repro and is left out; "
          "(trained) = a training phase started fresh rather than resuming)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

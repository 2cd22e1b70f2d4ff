"""Stage report: reports/index.md, the one page that links and summarises everything.

Every input is named on the command line (the stage table gives each path, so DVC and Snakemake
declare exactly what the page depends on). A missing input becomes a line on the page saying what
is missing; an input that does not fit its contract (detpipe/artifacts/) fails the stage.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detpipe.artifacts.base import ArtifactError  # noqa: E402
from detpipe.reports.index import Inputs, write_index  # noqa: E402

PARAMS = ()  # the page reads only the other stages' reports

INPUTS = {
    "annotate": "annotate stage's JSON",
    "split": "split stage's JSON",
    "split_png": "split distributions PNG",
    "frozen": "frozen-phase history TSV",
    "unfrozen": "unfrozen-phase history TSV",
    "overfit_json": "overfit stage's JSON",
    "overfit_md": "overfit stage's Markdown",
    "overfit_png": "training curves PNG",
    "metrics": "map stage's metrics.json",
    "map_info": "map stage's info.json (its seconds)",
    "pr_dir": "folder of PR-curve PNGs",
    "prf_png": "precision/recall/F1 against confidence PNG",
    "confusion": "confusion matrix PNG",
    "predictions": "folder of sample prediction images",
    "predict_summary": "predict stage's JSON (its seconds)",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="the index Markdown file to write")
    for key, text in INPUTS.items():
        ap.add_argument("--" + key.replace("_", "-"), dest=key, type=Path, required=True, help=text)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        out = write_index(Inputs(**{k: getattr(args, k) for k in INPUTS}), Path(args.out))
    except ArtifactError as exc:
        print(f"report: error: {exc}", file=sys.stderr)
        return 1
    print(f"report: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

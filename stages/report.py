"""Stage report: reports/index.md, the one page that links and summarises everything, and
reports/metrics.json, DVC's metrics file (the test scores, best val mAP50 and the verdict).

Inputs default to their places under --reports; each can be named explicitly so DVC and
Snakemake declare exactly what the page depends on. A missing input becomes a line on the page
saying what is missing, not a failure.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detpipe.reports.index import Inputs, headline_metrics, write_index  # noqa: E402

PARAMS = ()  # the page reads only the other stages' reports

OPTIONAL = {
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
    "confusion": "confusion matrix PNG",
    "predictions": "folder of sample prediction images",
    "predict_summary": "predict stage's JSON (its seconds)",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reports", required=True, help="the reports folder")
    ap.add_argument("--out", required=True, help="the index Markdown file to write")
    ap.add_argument("--headline", required=True, help="the headline metrics JSON to write (DVC's metrics file)")
    for key, text in OPTIONAL.items():
        ap.add_argument("--" + key.replace("_", "-"), dest=key, default=None,
                        help=f"{text} (default: its place under --reports)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    inputs = Inputs(Path(args.reports), **{k: getattr(args, k) for k in OPTIONAL})
    out = write_index(inputs, Path(args.out))
    headline, notes = headline_metrics(inputs)
    headline.write(args.headline)
    for note in notes:
        print(f"report: warning: {args.headline}: {note}", file=sys.stderr)
    print(f"report: wrote {out} and {args.headline}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

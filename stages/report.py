"""Stage report: reports/index.md, the one page that links and summarises everything, and
reports/metrics.json, DVC's metrics file (the test scores, best val mAP50 and the verdict).

Every input is named on the command line (the stage table gives each path, so DVC and Snakemake
declare exactly what the page depends on). A missing input becomes a line on the page saying what
is missing; an input that does not fit its contract (detpipe/artifacts/) fails the stage.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detpipe.artifacts.error import ArtifactError  # noqa: E402
from detpipe.reports.index import Inputs, headline_metrics, write_index  # noqa: E402

PARAMS = ()  # the page reads only the other stages' reports


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="the index Markdown file to write")
    ap.add_argument("--headline", required=True, help="the headline metrics JSON to write (DVC's metrics file)")
    for f in fields(Inputs):
        ap.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=Path, required=True, help=f.metadata["help"])
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        inputs = Inputs(**{f.name: getattr(args, f.name) for f in fields(Inputs)})
        out = write_index(inputs, Path(args.out))
        headline, notes = headline_metrics(inputs)
    except ArtifactError as exc:
        print(f"report: error: {exc}", file=sys.stderr)
        return 1
    headline.write(args.headline)
    for note in notes:
        print(f"report: warning: {args.headline}: {note}", file=sys.stderr)
    print(f"report: wrote {out} and {args.headline}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

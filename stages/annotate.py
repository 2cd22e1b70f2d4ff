"""Stage annotate: VOC XML (or COCO JSON, or YOLO txt) + images -> one annotation line per kept image.

Every image and object that comes in is either written or counted as skipped with its reason in
the report; problems that would make training meaningless stop the stage with a message that
names the files and the fix.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detpipe.annotations import write_lines  # noqa: E402
from detpipe.dataset_check import DataError, check_dataset, format_errors, summary_line  # noqa: E402
from detpipe.params import load_params_or_exit  # noqa: E402
from detpipe.warning_groups import format_warnings  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", required=True, help="params.yaml")
    parser.add_argument("--out", required=True, help="annotation lines to write")
    parser.add_argument("--report", required=True, help="JSON report to write")
    parser.add_argument("--workers", type=int, default=None, help="override data.workers")
    return parser.parse_args(argv)


def write_json(path: str | Path, payload: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    params = load_params_or_exit(args.params)
    try:
        result = check_dataset(params.data, workers=args.workers)
    except DataError as exc:
        print(f"annotate: error: {exc}", file=sys.stderr)
        return 1
    report = dict(result.report, seconds=round(time.perf_counter() - start, 3))
    # The report is written even on failure: it lists every problem, not just the first ten.
    write_json(args.report, report)
    if result.errors:
        print(f"annotate: {format_errors(result.errors)}\nannotate: nothing written to {args.out}; "
              f"full list in {args.report}", file=sys.stderr, flush=True)
    for line in format_warnings(report):
        print(f"annotate: {line}")
    if result.errors:
        return 1
    write_lines(args.out, result.records)
    print(f"annotate: {summary_line(report)} -> {args.out} ({report['seconds']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

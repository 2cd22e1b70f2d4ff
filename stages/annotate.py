"""Stage annotate: VOC XML (or COCO JSON, or YOLO txt) + images -> one annotation line per kept image.

Every image and object that comes in is either written or counted as skipped with its reason in
the report; problems that would make training meaningless stop the stage with a message that
names the files and the fix.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detpipe.data.annotations import write_lines  # noqa: E402
from detpipe.data.dataset_check import DataError, check_dataset, format_errors, summary_line  # noqa: E402
from detpipe.artifacts.image_manifest import hash_files, write_manifest  # noqa: E402
from detpipe.params import ParamsError  # noqa: E402
from detpipe.data.warning_groups import format_warnings  # noqa: E402
from detpipe.pipeline.view import load_stage_params  # noqa: E402

PARAMS = ("data",)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", required=True, help="params.yaml")
    parser.add_argument("--out", required=True, help="annotation lines to write")
    parser.add_argument("--images", required=True, help="content hash of every kept image (sha256sum format)")
    parser.add_argument("--report", required=True, help="JSON report to write")
    parser.add_argument("--workers", type=int, default=None, help="override data.workers")
    return parser.parse_args(argv)


def check_watched(data) -> None:
    """Every data input must live under data.root: that folder is what DVC and Snakemake watch, so a
    file elsewhere could change without rerunning anything."""
    root = Path(data.root).resolve()
    for key in ("images", "coco_json", "classes_file"):
        value = getattr(data, key)
        if value and not Path(value).resolve().is_relative_to(root):
            raise ParamsError(f"data.{key} {value!r} is outside data.root {data.root!r}: DVC and Snakemake watch "
                              f"data.root only, so changes to it would rerun nothing. Fix: move it under "
                              f"{data.root}, or set data.root to a folder that holds both")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    params = load_stage_params(args.params, PARAMS, "annotate")
    try:
        check_watched(params.data)
        result = check_dataset(params.data, workers=args.workers)
    except (ParamsError, DataError) as exc:
        print(f"annotate: error: {exc}", file=sys.stderr)
        return 1
    # No wall time in the report: a stage's outputs are a function of its inputs, so that an
    # unchanged result reruns nothing downstream (the time is printed instead).
    report = result.report
    # The report is written even on failure: it lists every problem, not just the first ten.
    report.write(args.report)
    if result.errors:
        print(f"annotate: {format_errors(result.errors)}\nannotate: nothing written to {args.out}; "
              f"full list in {args.report}", file=sys.stderr, flush=True)
    for line in format_warnings(report):
        print(f"annotate: {line}")
    if result.errors:
        return 1
    write_lines(args.out, result.records)
    write_manifest(args.images, hash_files([r.path for r in result.records], workers=params.data.workers))
    print(f"annotate: {summary_line(report)} -> {args.out} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`detpipe check-data`: validate a dataset exactly as the annotate stage does, without running the
pipeline. Exit status 1 when there are errors, 0 otherwise. Errors come first, then the warnings
grouped by kind (a class that never appears first), each kind with its count and first files."""
from __future__ import annotations

import argparse
import sys
from typing import get_args

from detpipe.cli.common import prog
from detpipe.data.dataset_check import DataError, check_dataset, format_errors, summary_line
from detpipe.params import DataParams, DataSource, ParamsError, load_params, print_error, read_classes_file
from detpipe.data.warning_groups import format_warnings


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog("check-data"), description=__doc__)
    p.add_argument("--params", help="params.yaml to take data.* from")
    p.add_argument("--root", help="dataset folder (VOC: Annotations/ + JPEGImages/; YOLO: images/ + labels/); "
                   "overrides data.root")
    p.add_argument("--classes", help="comma-separated class names; overrides data.classes")
    p.add_argument("--classes-file", help="file of class names, one per line")
    p.add_argument("--source", choices=get_args(DataSource), help="overrides data.source")
    p.add_argument("--coco-json", help="COCO instances JSON (with --source coco)")
    p.add_argument("--images", help="image folder; overrides data.images")
    p.add_argument("--workers", type=int, help="processes (0 = automatic)")
    p.add_argument("--report", help="also write the full JSON report here")
    p.add_argument("--show", type=int, default=3, help="files listed per warning kind (default 3)")
    return p.parse_args(argv)


def data_params(args: argparse.Namespace) -> DataParams:
    """params.yaml's data section (or defaults) with the command-line overrides applied."""
    if not (args.params or args.root or args.coco_json):
        raise ParamsError("give --params params.yaml, or --root DIR (or --coco-json) with --classes a,b")
    data = load_params(args.params).data if args.params else DataParams()
    overrides = {k: v for k, v in (("root", args.root), ("source", args.source),
                                   ("coco_json", args.coco_json), ("images", args.images)) if v}
    if args.coco_json and not args.source:
        overrides["source"] = "coco"
    if args.classes:
        overrides["classes"] = tuple(c.strip() for c in args.classes.split(",") if c.strip())
    elif args.classes_file:
        overrides["classes"] = read_classes_file(args.classes_file, key="--classes-file")
    data = data.replace(**overrides)
    if not data.classes:
        raise ParamsError("no class names: pass --classes a,b, --classes-file FILE or --params")
    return data


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        result = check_dataset(data_params(args), workers=args.workers)
    except ParamsError as exc:
        return print_error(exc)
    except DataError as exc:
        print(f"check-data: error: {exc}", file=sys.stderr)
        return 1
    report = result.report
    if args.report:
        report.write(args.report)
    if result.errors:
        print(format_errors(result.errors), file=sys.stderr, flush=True)
    print("\n".join(format_warnings(report, args.show) + [f"check-data: {summary_line(report)}"]))
    if result.errors:
        return 1
    print("check-data: OK — the dataset can be trained on.")
    return 0

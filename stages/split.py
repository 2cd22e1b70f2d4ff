"""Stage split: annotation lines -> train/val/test annotation lines, a report and a figure.

Each image's split is fixed by a hash of its path and the top-level `seed` (stable when images are
added or removed), with the fractions from `split`; or the VOC ImageSets lists when
`split.use_imagesets: true`. Each split also gets the content hashes of its images
(<split>.sha256), so a changed pixel reruns exactly the stages that read that split. The report compares class counts and
box sizes across splits and flags a split that differs markedly from train.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detpipe.data.annotations import read_lines, write_lines  # noqa: E402
from detpipe.data.images import PixelLimit, longer_sides  # noqa: E402
from detpipe.artifacts.split_report import SplitReport  # noqa: E402
from detpipe.artifacts.image_manifest import ManifestError, read_manifest, subset, write_manifest  # noqa: E402
from detpipe.pipeline.view import load_stage_params  # noqa: E402
from detpipe.reports.split_check import compare_splits, plot_splits, split_stats  # noqa: E402
from detpipe.data.splits import SPLITS, SplitError, empty_split_problem, imagesets_split, split_records  # noqa: E402

PARAMS = ("seed", "split", "data.classes", "data.root", "data.max_image_pixels")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", required=True, help="params.yaml")
    parser.add_argument("--annotations", required=True, help="annotation lines from the annotate stage")
    parser.add_argument("--images", required=True, help="content hashes of the annotated images (annotate stage)")
    parser.add_argument("--out-dir", required=True,
                        help="folder for {train,val,test}.txt and their image hashes {train,val,test}.sha256")
    parser.add_argument("--report", required=True, help="JSON report to write")
    parser.add_argument("--plot", required=True, help="PNG comparing the splits")
    return parser.parse_args(argv)


def make_splits(params, records: list) -> tuple[dict, list[str]]:
    """The configured splitting method; returns (splits, warnings)."""
    if params.split.use_imagesets:
        return imagesets_split(records, params.data.root)
    fractions = (params.split.train, params.split.val, params.split.test)
    return split_records(records, len(params.data.classes), fractions, params.seed, params.data.root)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    params = load_stage_params(args.params, PARAMS, "split")
    try:
        records = read_lines(args.annotations)
        hashes = read_manifest(args.images)
        classes = list(params.data.classes)
        bad = sorted({int(v) for r in records for v in r.labels if not 0 <= v < len(classes)})
        if bad:
            raise SplitError(f"{args.annotations} uses class indices {bad} but data.classes has "
                             f"{len(classes)} names. Fix: rerun annotate with the current params.")
        splits, warnings = make_splits(params, records)
        problem = empty_split_problem(splits, params.split, args.params)
        if problem:
            raise SplitError(f"{args.annotations} ({len(records)} images): {problem}")
        split_hashes = {name: subset(hashes, [r.path for r in splits[name]], args.images) for name in SPLITS}
    except (SplitError, ManifestError, ValueError, FileNotFoundError) as exc:
        print(f"split: error: {exc}", file=sys.stderr)
        return 1
    out_dir = Path(args.out_dir)
    for name in SPLITS:
        write_lines(out_dir / f"{name}.txt", splits[name])
        write_manifest(out_dir / f"{name}.sha256", split_hashes[name])
    # Image sizes from the headers: the report's object sizes relative to the letterboxed input.
    longer = longer_sides([r.path for r in records], PixelLimit(params.data.max_image_pixels))
    unread = [p for p, n in longer.items() if n is None]
    if unread:
        warnings.append(f"{len(unread)} image(s) could not be opened for their size (first: {unread[0]}); "
                        "their objects are left out of object_scale. Fix: rerun the annotate stage.")
    stats = {name: split_stats(splits[name], classes, longer) for name in SPLITS}
    comparison = compare_splits(stats, params.split.max_shift)
    plot_splits(stats, comparison, classes, args.plot)
    report = SplitReport(
        method="imagesets" if params.split.use_imagesets else "hashed",
        seed=params.seed,
        fractions={n: getattr(params.split, n) for n in SPLITS},
        splits=stats,
        comparison=comparison,
        flagged=[n for n, c in comparison.items() if c.flagged],
        warnings=warnings,
    )  # no wall time: an unchanged split must leave this file unchanged (overfit and report read it)
    report.write(args.report)
    counts = ", ".join(f"{n} {stats[n].images} images/{stats[n].objects} objects" for n in SPLITS)
    flag = f"; FLAGGED {report.flagged}: see {args.plot}" if report.flagged else ""
    print(f"split: {counts}; {len(warnings)} warnings{flag} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

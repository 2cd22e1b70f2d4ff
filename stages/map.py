"""Stage map: VOC and COCO mAP, PR curves, P/R/F1 vs confidence, confusion matrix.

    python stages/map.py --params params.yaml --split data/splits/test.txt \
        --detections data/detections/test.csv --out reports/map
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from detpipe.artifacts.error import ArtifactError  # noqa: E402
from detpipe.data.annotations import ground_truths, read_lines  # noqa: E402
from detpipe.metrics.io import InputError, read_detections_csv  # noqa: E402
from detpipe.reports.map_report import format_table, write_map_reports  # noqa: E402
from detpipe.pipeline.view import load_stage_params  # noqa: E402

PARAMS = ("data.classes", "map", "predict.confidence")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", required=True)
    parser.add_argument("--split", required=True, help="annotation lines of the evaluated images")
    parser.add_argument("--detections", required=True, help="CSV: image, class, score, x1, y1, x2, y2")
    parser.add_argument("--out", required=True, help="report folder")
    args = parser.parse_args(argv)

    params = load_stage_params(args.params, PARAMS, "map")
    classes = list(params.data.classes)
    records = read_lines(args.split)
    for r in records:
        if len(r.labels) and r.labels.max() >= len(classes):
            raise SystemExit(f"{args.split}: {r.path}: class id {int(r.labels.max())} but params "
                             f"data.classes has {len(classes)} classes")
    try:
        dets = read_detections_csv(args.detections, [r.path for r in records], classes)
    except (InputError, ArtifactError) as exc:
        raise SystemExit(f"error: {exc}") from None
    metrics = write_map_reports(args.out, ground_truths(records), dets, classes,
                                min_overlap=params.map.min_overlap, voc07=params.map.voc07,
                                confidence=params.predict.confidence)
    print(format_table(metrics, classes))
    return 0


if __name__ == "__main__":
    sys.exit(main())

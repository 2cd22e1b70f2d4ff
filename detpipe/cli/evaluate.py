"""`python -m detpipe evaluate`: score detections made by any tool, VOC and COCO at once.

    python -m detpipe evaluate --gt GT_DIR --det DET_DIR --out reports/eval
    python -m detpipe evaluate --coco-gt instances.json --coco-det results.json --out reports/eval

GT_DIR/DET_DIR hold one .txt per image with the same file name (the Cartucho/mAP format):
ground truth lines `class x1 y1 x2 y2 [difficult]`, detection lines `class score x1 y1 x2 y2`
(class names without spaces). Writes the map stage's reports under --out and prints a table.
"""
from __future__ import annotations

import argparse
import sys

from ..metrics.io import InputError, coco_to_lists, read_coco_json, read_txt_dirs
from ..metrics.reports import format_table, write_map_reports


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m detpipe evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gt", help="folder of ground-truth .txt files, one per image")
    p.add_argument("--det", help="folder of detection .txt files, one per image")
    p.add_argument("--coco-gt", help="COCO instances JSON (ground truth)")
    p.add_argument("--coco-det", help="COCO results JSON (list of image_id, category_id, bbox, score)")
    p.add_argument("--out", required=True, help="folder for metrics.json, PR curves, plots")
    p.add_argument("--classes", help="comma-separated class names and order (default: sorted "
                   "ground-truth classes; COCO: the file's categories)")
    p.add_argument("--min-overlap", type=float, default=0.5, help="VOC IoU threshold (default 0.5)")
    p.add_argument("--voc07", action="store_true", help="VOC2007 11-point AP instead of all-point")
    p.add_argument("--confidence", type=float, default=0.5,
                   help="confidence for P/R/F1 and the confusion matrix (default 0.5)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    txt = args.gt is not None or args.det is not None
    coco = args.coco_gt is not None or args.coco_det is not None
    if txt == coco or (txt and not (args.gt and args.det)) or (coco and not (args.coco_gt and args.coco_det)):
        parser.error("give either --gt DIR and --det DIR, or --coco-gt FILE and --coco-det FILE")
    if not 0.0 <= args.min_overlap <= 1.0:
        parser.error(f"--min-overlap must be within 0..1, got {args.min_overlap}")
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    try:
        if txt:
            gts, dets, names = read_txt_dirs(args.gt, args.det, classes)
            coco_data = None
        else:
            coco_data, names = read_coco_json(args.coco_gt, args.coco_det)
            gts, dets = coco_to_lists(coco_data)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    metrics = write_map_reports(args.out, gts, dets, names, args.min_overlap, args.voc07,
                                args.confidence, coco_data=coco_data)
    print(format_table(metrics, names))
    print(f"\nreports written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Stage predict: run the best model on the test split.

Writes every box with score >= map.confidence to a CSV (the map stage's input) and draws sample
test images with the boxes >= predict.confidence, plus a grid where hits, false positives and
misses are told apart.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

# The library beside this script, not whatever copy is installed: a queued `dvc exp run`
# runs from a snapshot of the repo and must train with that snapshot's code.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detpipe.data.annotations import read_lines  # noqa: E402
from detpipe.model.device import select_device  # noqa: E402
from detpipe.data.images import ImageCheckError, PixelLimit, check_headers, load_rgb  # noqa: E402
from detpipe.infer.backends import leave_cpu_to  # noqa: E402
from detpipe.infer.predictor import Predictor  # noqa: E402
from detpipe.artifacts.predict_summary import PredictSummary  # noqa: E402
from detpipe.artifacts.image_manifest import ManifestError, check_images, read_manifest  # noqa: E402
from detpipe.pipeline.view import load_stage_params  # noqa: E402
from detpipe.reports.prediction_grid import draw_detections, draw_prediction_grid  # noqa: E402
from detpipe.infer.decode import above, sample_indices  # noqa: E402
from detpipe.artifacts.detections import write_detections  # noqa: E402
from detpipe.safe_names import safe_name  # noqa: E402
from detpipe.model.load import load_detector  # noqa: E402

PARAMS = ("data.classes", "data.max_image_pixels", "predict", "map.confidence", "map.min_overlap", "train.device",
          "train.num_workers")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--params", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--split", required=True, help="test split (annotation lines)")
    p.add_argument("--images", help="content hashes of the test images (split stage): checked before predicting")
    p.add_argument("--out", required=True, help="detections CSV")
    p.add_argument("--samples-dir", required=True, help="folder for drawn sample images")
    p.add_argument("--summary", required=True, help="JSON with counts and timing")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    start = time.time()
    params = load_stage_params(args.params, PARAMS, "predict")
    device = select_device(params.train.device)
    model, state = load_detector(args.weights, device)
    names = list(params.data.classes)
    if state["class_names"] != names:
        sys.exit(f"error: {args.weights} was trained for classes {state['class_names']} but {args.params} "
                 f"lists {names}; rerun training (dvc repro) or fix data.classes")
    records = read_lines(args.split)
    limit = PixelLimit(params.data.max_image_pixels)
    try:
        if args.images:
            check_images(read_manifest(args.images), [r.path for r in records], args.images)
        check_headers([r.path for r in records], limit)  # one line before any work, not a loader's traceback
    except (ManifestError, ImageCheckError) as exc:
        sys.exit(f"predict: error: {exc}")
    p = params.predict
    # The same batched, letterboxed inference as `python -m detpipe predict`, so both give the same boxes.
    predictor = Predictor.from_model(model, names, state["imgsz"], device, params.map.confidence, p.nms_iou,
                                     p.max_det, backend=p.backend)
    leave_cpu_to(predictor.backend)
    infer_start = time.time()
    dets = predictor.predict_files([r.path for r in records], p.batch_size, params.train.num_workers,
                                   progress=lambda it: tqdm(it, desc="predict", leave=False, dynamic_ncols=True),
                                   pixel_limit=limit)
    infer_seconds = time.time() - infer_start
    rows = write_detections(args.out, [r.path for r in records], dets, names)

    out_dir = Path(args.samples_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.jpg"):
        old.unlink()
    tiles = []
    for i in sample_indices(len(records), p.samples):
        rgb = load_rgb(records[i].path, limit)
        d = above(dets[i], p.confidence)
        draw_detections(rgb, d["boxes"], d["labels"], d["scores"], names).save(
            out_dir / f"{i:04d}_{safe_name(Path(records[i].path).stem)}.jpg", quality=90)
        gt = (records[i].boxes[~records[i].difficult], records[i].labels[~records[i].difficult])
        tiles.append((rgb, gt, (d["boxes"], d["labels"], d["scores"])))
    draw_prediction_grid(tiles, names, out_dir / "grid.jpg", iou=params.map.min_overlap,
                         titles=[Path(records[i].path).name for i in sample_indices(len(records), p.samples)])
    summary = PredictSummary(images=len(records), detections=rows, confidence_for_csv=params.map.confidence,
                             confidence_for_samples=p.confidence, samples=len(tiles),
                             ms_per_image=1000 * infer_seconds / max(1, len(records)), device=str(device),
                             seconds=time.time() - start)
    summary.write(args.summary)
    print(f"== predict: {len(records)} test images, {rows} boxes >= {params.map.confidence} -> {args.out}; "
          f"{len(tiles)} samples in {out_dir} ({summary.ms_per_image:.1f} ms/image)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

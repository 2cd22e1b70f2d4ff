"""Inference speed per part on the CPU: detpipe's detector vs Ultralytics YOLOv8n, same images, same run.

    python bench/bench_predict.py [--threads 1] [--images 32] [--weights models/best.pt]

For imgsz 320 and 640 and batch 1 and 8, prints ms per image for preprocessing (letterbox, stack),
model forward, decoding + NMS, and drawing, plus images/s. The images are 8 synthetic 640x480 /
480x640 pictures. detpipe's model is the params.yaml architecture with untrained weights unless
--weights is given (the cost of a forward pass does not depend on the weight values; NMS and
drawing cost a little more with a trained model's boxes). YOLOv8n is built from its yaml, so no
weights are downloaded, and timed through its own predict pipeline (`Results.speed`) plus
`Results.plot()` for drawing. Ultralytics is not a detpipe dependency: if it cannot be imported
this prints how to install it in a separate venv.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detpipe.cpus import usable_cpus  # noqa: E402
from detpipe.infer.predictor import Predictor, sample_images, time_parts  # noqa: E402
from detpipe.model.detector import build_model, describe, model_summary  # noqa: E402
from detpipe.params import load_params  # noqa: E402
from detpipe.model.load import model_config  # noqa: E402

SIZES = (320, 640)
BATCHES = (1, 8)
INSTALL = """Ultralytics is not installed here (and is not a detpipe dependency). To include YOLOv8n, use a
separate venv, e.g.:
    python3 -m venv ~/yolo-venv && ~/yolo-venv/bin/pip install -r requirements.txt -e . ultralytics
    ~/yolo-venv/bin/python bench/bench_predict.py"""


def detpipe_predictor(weights: str | None, params_path: Path) -> tuple[Predictor, str]:
    if weights:
        return Predictor(weights, "cpu", conf=0.25, iou=0.45), weights
    params = load_params(params_path)
    torch.manual_seed(0)
    model = build_model(model_config(params)).eval()
    label = f"{describe(model.config, model_summary(model, params.model.imgsz))} (params.yaml, untrained weights)"
    return Predictor.from_model(model, params.data.classes, params.model.imgsz, torch.device("cpu"),
                                0.25, 0.45, 100), label


def time_yolo(model, images: list[np.ndarray], size: int, batch: int, runs: int, warmup: int = 1) -> dict:
    """ms per image via Ultralytics' own pipeline; drawing timed around Results.plot()."""
    bgr = [np.ascontiguousarray(im[..., ::-1]) for im in images]
    parts = {"preprocess": 0.0, "forward": 0.0, "nms": 0.0, "draw": 0.0}
    n = 0
    for it in range(warmup + runs):
        chosen = [bgr[(it * batch + k) % len(bgr)] for k in range(batch)]
        results = model.predict(chosen, imgsz=size, batch=batch, conf=0.25, iou=0.45, device="cpu",
                                verbose=False, rect=False)
        t0 = time.perf_counter()
        for r in results:
            r.plot()
        draw = time.perf_counter() - t0
        if it >= warmup:
            # Results.speed is ms per image of the batch it came from
            for r in results:
                parts["preprocess"] += r.speed["preprocess"]
                parts["forward"] += r.speed["inference"]
                parts["nms"] += r.speed["postprocess"]
            parts["draw"] += 1000 * draw
            n += len(results)
    ms = {k: v / max(1, n) for k, v in parts.items()}
    infer = ms["preprocess"] + ms["forward"] + ms["nms"]
    return {**ms, "total": infer + ms["draw"], "images_per_s": 1000 / max(infer, 1e-9)}


def row(name: str, size: int, batch: int, r: dict) -> str:
    return (f"{name:<9} {size:>5} {batch:>5} {r['preprocess']:>10.2f} {r['forward']:>9.2f} {r['nms']:>11.2f} "
            f"{r['draw']:>8.2f} {r['total']:>8.2f} {r['images_per_s']:>9.1f}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: steady figures on a shared machine; 0 = torch's default)")
    p.add_argument("--images", type=int, default=32, help="images timed per (size, batch) (default 32)")
    p.add_argument("--weights", help="a detpipe checkpoint or .onnx instead of the untrained params.yaml model")
    p.add_argument("--params", default=str(Path(__file__).resolve().parents[1] / "params.yaml"))
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    images = sample_images(8)
    predictor, label = detpipe_predictor(args.weights, Path(args.params))
    try:
        os.environ.setdefault("YOLO_OFFLINE", "1")
        import ultralytics
        from ultralytics import YOLO
        yolo = YOLO("yolov8n.yaml")  # architecture only: nothing downloaded
        yolo_note = f"Ultralytics {ultralytics.__version__} YOLOv8n (from yolov8n.yaml, untrained)"
    except ImportError:
        yolo, yolo_note = None, None
    print(f"CPU, torch {torch.__version__}, {torch.get_num_threads()} thread(s), {usable_cpus()} usable CPUs; "
          f"8 synthetic 640x480/480x640 images, conf 0.25, IoU 0.45, {args.images} images per row")
    print(f"detpipe: {label}")
    print(f"yolov8n: {yolo_note or 'not installed (see below)'}")
    print(f"\n{'model':<9} {'imgsz':>5} {'batch':>5} {'preprocess':>10} {'forward':>9} {'decode+NMS':>11} "
          f"{'drawing':>8} {'total':>8} {'images/s':>9}\n{'':<21}(ms per image; images/s without drawing)")
    for size in SIZES:
        if predictor.backend.fixed_size not in (None, size):
            print(f"detpipe   {size:>5}  skipped: the ONNX file was exported for {predictor.backend.fixed_size}")
            continue
        predictor.imgsz = size
        for batch in BATCHES:
            runs = max(1, args.images // batch)
            print(row("detpipe", size, batch, time_parts(predictor, images, batch, runs=runs, warmup=1)), flush=True)
            if yolo is not None:
                print(row("yolov8n", size, batch, time_yolo(yolo, images, size, batch, runs)), flush=True)
    if yolo is None:
        print("\n" + INSTALL)
    return 0


if __name__ == "__main__":
    sys.exit(main())

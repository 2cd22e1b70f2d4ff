"""Inference speed per part on the CPU: detpipe's detector vs Ultralytics YOLOv8n, same images, same run.

    python bench/bench_predict.py [--threads 1] [--images 32] [--sizes 320,640] [--backend auto]
        [--weights models/best.pt] [--gap 0.02]

For each imgsz and batch 1 and 8, prints ms per image for preprocessing (letterbox, stack),
model forward, decoding + NMS, and drawing, plus images/s, and the ratio of detpipe's latency
(preprocess + forward + NMS, what Ultralytics' `Results.speed` counts; drawing apart) to
YOLOv8n's. Each tool runs in a process of its own, set up as its commands set it up (detpipe
leaves the cores to onnxruntime: torch at one thread, as `detpipe predict` does); the two alternate
batch by batch, 20 ms apart (so neither's idle threads still spin in the other's batch), so a
neighbour's load slows both alike; each part's figure is its median over the timed batches. The
images are 8 synthetic 640x480 / 480x640 pictures. detpipe's model is the params.yaml architecture
with untrained weights unless --weights is given (the cost of a forward pass does not depend on the
weight values; NMS and drawing cost a little more with a trained model's boxes). YOLOv8n is built from its yaml, so no
weights are downloaded, and timed through its own predict pipeline (`Results.speed`) plus
`Results.plot()` for drawing. Ultralytics is not a detpipe dependency: if it cannot be imported
this prints how to install it in a separate venv.
"""
from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import get_args

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detpipe.cpus import usable_cpus  # noqa: E402
from detpipe.infer.backends import leave_cpu_to  # noqa: E402
from detpipe.infer.predictor import Predictor, sample_images, time_parts  # noqa: E402
from detpipe.model.detector import build_model, describe, model_summary  # noqa: E402
from detpipe.params import InferBackend, load_params  # noqa: E402
from detpipe.model.load import model_config  # noqa: E402

BATCHES = (1, 8)
INSTALL = """Ultralytics is not installed here (and is not a detpipe dependency). To include YOLOv8n, use a
separate venv, e.g.:
    python3 -m venv ~/yolo-venv && ~/yolo-venv/bin/pip install -r requirements.txt -e . ultralytics
    ~/yolo-venv/bin/python bench/bench_predict.py"""


PARTS = ("preprocess", "forward", "nms", "draw")
# Seconds between two steps. torch's OpenMP workers spin for a few milliseconds after a parallel op
# (libgomp's default spin count) before they sleep; without a pause, one tool's spinning threads run
# into the next step's timed batch, which never happens when a user runs one of them.
GAP = 0.02


def untrained_model(params_path: Path):
    """(the params.yaml architecture with seed-0 initial weights, in eval mode; the params): the
    model every inference bench times (a forward pass costs the same whatever the weights)."""
    params = load_params(params_path)
    torch.manual_seed(0)
    return build_model(model_config(params)).eval(), params


def detpipe_predictor(weights: str | None, params_path: Path, size: int, backend: str) -> tuple[Predictor, str]:
    if weights:
        return Predictor(weights, "cpu", conf=0.25, iou=0.45, imgsz=size, backend=backend), weights
    model, params = untrained_model(params_path)
    label = f"{describe(model.config, model_summary(model, size))} (params.yaml, untrained weights)"
    return Predictor.from_model(model, params.data.classes, size, torch.device("cpu"), 0.25, 0.45, 100,
                                backend=backend), label


def detpipe_batch(predictor: Predictor, chosen: list[np.ndarray]) -> dict[str, float]:
    """ms per image of each part for one batch (detpipe's own timer, one run)."""
    r = time_parts(predictor, chosen, len(chosen), runs=1, warmup=0)
    return {k: r[k] for k in PARTS}


def yolo_batch(model, chosen_bgr: list[np.ndarray], size: int) -> dict[str, float]:
    """ms per image of each part via Ultralytics' own pipeline; drawing timed around Results.plot()."""
    results = model.predict(chosen_bgr, imgsz=size, batch=len(chosen_bgr), conf=0.25, iou=0.45, device="cpu",
                            verbose=False, rect=False)
    t0 = time.perf_counter()
    for r in results:
        r.plot()
    draw = 1000 * (time.perf_counter() - t0) / len(results)
    # Results.speed is ms per image of the batch it came from
    return {"preprocess": float(np.mean([r.speed["preprocess"] for r in results])),
            "forward": float(np.mean([r.speed["inference"] for r in results])),
            "nms": float(np.mean([r.speed["postprocess"] for r in results])), "draw": draw}


def alternate(steps: dict, n_images: int, batch: int, runs: int, warmup: int = 2, gap: float = GAP) -> dict[str, dict]:
    """Each step(indices of the batch's images) in turn on the same batch, `gap` seconds apart, `runs`
    timed rounds after `warmup`:
    per step the median ms per image of each part, "latency" (the median of each batch's
    preprocess + forward + NMS), "total" (with drawing) and images/s."""
    parts = {name: [] for name in steps}
    for it in range(warmup + runs):
        chosen = [(it * batch + k) % n_images for k in range(batch)]
        for name, step in steps.items():
            time.sleep(gap)
            r = step(chosen)
            if it >= warmup:
                parts[name].append(r)
    out = {}
    for name, rows in parts.items():
        latency = float(np.median([r["preprocess"] + r["forward"] + r["nms"] for r in rows]))
        out[name] = {**{k: float(np.median([r[k] for r in rows])) for k in PARTS}, "latency": latency,
                     "total": float(np.median([sum(r[k] for k in PARTS) for r in rows])),
                     "images_per_s": 1000 / max(latency, 1e-9)}
    return out


def row(name: str, size: int, batch: int, r: dict, ref: dict | None) -> str:
    ratio = f"{r['latency'] / ref['latency']:>7.2f}x" if ref else f"{'':>8}"
    return (f"{name:<9} {size:>5} {batch:>5} {r['preprocess']:>10.2f} {r['forward']:>9.2f} {r['nms']:>11.2f} "
            f"{r['latency']:>8.2f} {ratio} {r['draw']:>8.2f} {r['images_per_s']:>9.1f}")


def serve(conn, tool: str, options: dict) -> None:
    """One tool in a process of its own, set up as its users run it: build it, send a line saying
    what runs, then time each (imgsz, image indices) batch asked for until None comes."""
    try:
        if options["threads"]:
            torch.set_num_threads(options["threads"])
        images = sample_images(8)
        if tool == "detpipe":
            predictors = {size: detpipe_predictor(options["weights"], Path(options["params"]), size, options["backend"])
                          for size in options["sizes"]}
            predictor, label = predictors[options["sizes"][0]]
            leave_cpu_to(predictor.backend)  # what `detpipe predict` and `fps` do once the backend is built
            conn.send(f"{label}, on {predictor.backend.where} (--backend {options['backend']}), "
                      f"torch at {torch.get_num_threads()} thread(s)")

            def step(size: int, idx: list[int]) -> dict[str, float]:
                return detpipe_batch(predictors[size][0], [images[i] for i in idx])
        else:
            os.environ.setdefault("YOLO_OFFLINE", "1")
            import ultralytics
            from ultralytics import YOLO
            from ultralytics.utils import torch_utils
            torch_utils.NUM_THREADS = torch.get_num_threads()  # its select_device() would reset the threads
            yolo = YOLO("yolov8n.yaml")  # architecture only: nothing downloaded
            bgr = [np.ascontiguousarray(im[..., ::-1]) for im in images]
            conn.send(f"Ultralytics {ultralytics.__version__} YOLOv8n (from yolov8n.yaml, untrained), "
                      f"torch at {torch.get_num_threads()} thread(s)")

            def step(size: int, idx: list[int]) -> dict[str, float]:
                return yolo_batch(yolo, [bgr[i] for i in idx], size)
        while (request := conn.recv()) is not None:
            conn.send(step(*request))
    except Exception as exc:  # the parent prints it; a bench has no other caller
        conn.send(f"error: {tool}: {type(exc).__name__}: {exc}")


class Worker:
    """A tool's process (spawned: nothing inherited from this one) and the pipe to it."""

    def __init__(self, tool: str, options: dict) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=serve, args=(child, tool, options), daemon=True)
        self.process.start()
        self.label = self.conn.recv()
        if self.label.startswith("error: "):
            raise SystemExit(self.label)

    def __call__(self, size: int, idx: list[int]) -> dict[str, float]:
        self.conn.send((size, idx))
        return self.conn.recv()

    def close(self) -> None:
        self.conn.send(None)
        self.process.join(timeout=30)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: steady figures on a shared machine; 0 = torch's default)")
    p.add_argument("--images", type=int, default=32, help="images timed per (size, batch) (default 32)")
    p.add_argument("--sizes", default="320,640", help="input sizes, comma-separated (default 320,640)")
    p.add_argument("--backend", default="auto", choices=get_args(InferBackend),
                   help="detpipe's inference backend (predict.backend; default auto)")
    p.add_argument("--weights", help="a detpipe checkpoint or .onnx instead of the untrained params.yaml model")
    p.add_argument("--gap", type=float, default=GAP, help=f"seconds between two timed batches (default {GAP})")
    p.add_argument("--params", default=str(Path(__file__).resolve().parents[1] / "params.yaml"))
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    options = {"threads": args.threads, "weights": args.weights, "params": args.params, "backend": args.backend,
               "sizes": sizes}
    workers = {"detpipe": Worker("detpipe", options)}
    if importlib.util.find_spec("ultralytics") is not None:
        workers["yolov8n"] = Worker("yolov8n", options)
    threads = args.threads or torch.get_num_threads()
    print(f"CPU, torch {torch.__version__}, {threads} thread(s) each, {usable_cpus()} usable CPUs; "
          f"8 synthetic 640x480/480x640 images, conf 0.25, IoU 0.45, {args.images} images per row")
    print(f"detpipe: {workers['detpipe'].label}")
    print(f"yolov8n: {workers['yolov8n'].label if 'yolov8n' in workers else 'not installed (see below)'}")
    print(f"\n{'model':<9} {'imgsz':>5} {'batch':>5} {'preprocess':>10} {'forward':>9} {'decode+NMS':>11} "
          f"{'latency':>8} {'/yolov8n':>8} {'drawing':>8} {'images/s':>9}\n{'':<21}(ms per image; latency = "
          "preprocess + forward + NMS; images/s from the latency; the tools alternate batch by batch)")
    for size in sizes:
        for batch in BATCHES:
            steps = {name: (lambda idx, w=w: w(size, idx)) for name, w in workers.items()}
            r = alternate(steps, 8, batch, runs=max(3, args.images // batch), gap=args.gap)
            print(row("detpipe", size, batch, r["detpipe"], r.get("yolov8n")), flush=True)
            if "yolov8n" in r:
                print(row("yolov8n", size, batch, r["yolov8n"], None), flush=True)
    for w in workers.values():
        w.close()
    if "yolov8n" not in workers:
        print("\n" + INSTALL)
    return 0


if __name__ == "__main__":
    sys.exit(main())

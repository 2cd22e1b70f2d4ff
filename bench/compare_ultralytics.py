"""detpipe vs Ultralytics YOLOv8n: both trained from scratch on the same splits, same wall-clock budget.

    /tmp/yolo-venv/bin/python bench/compare_ultralytics.py [--imgsz 320] [--detpipe-epochs 3+60]
        [--yolo-seconds S] [--threads 2] [--out reports/bench/compare_ultralytics.json]

Run from the repo root after `dvc repro` wrote data/splits/{train,val,test}.txt. In one process:

1. detpipe trains with params.yaml's recipe (frozen then unfrozen phase, exactly as stages/train.py,
   checkpoints in a temp dir) at --imgsz; its wall time is the budget T. Train images/s = images
   over training-step seconds (validation excluded), from the per-epoch TSV; also the median
   epoch's rate, which an epoch stalled by another user's job does not drag down.
2. The splits become a YOLO dataset in a temp dir (symlinked images, `class cx cy w h` labels
   normalised to the image; difficult objects left out, as detpipe trains without them), and
   YOLOv8n, built from yolov8n.yaml (no weights downloaded), trains from scratch with
   `time=T/3600` h, imgsz, batch 16, workers 0, cache ram (detpipe caches decoded images too),
   val=True (both tools validate every epoch and keep their best epoch), plots=False, amp=False.
3. Both best models run on the test split and are scored by detpipe's own evaluator
   (detpipe.metrics voc_map and coco_eval on original-pixel xyxy boxes, difficult objects as
   difficult, conf 0.001): detpipe with NMS IoU predict.nms_iou and max_det predict.max_det;
   YOLOv8n with its own validation defaults (NMS IoU 0.7, max_det 300) and, for reference, IoU 0.45.
   Inference ms/image: batch 1, median wall clock of one call per decoded in-memory image
   (letterbox, forward, decode + NMS, boxes back to pixels), conf 0.25, IoU 0.45, after a warm-up,
   the two tools alternating image by image so other jobs on the machine slow both alike.
4. One table with the ratios (detpipe / ultralytics) is printed and written as JSON to --out.

Ultralytics is AGPL and is not a detpipe dependency: install it only in a separate bench venv
(e.g. a venv reusing .venv's packages plus `pip install --no-deps ultralytics ultralytics-thop` and
`pip install polars`, which Ultralytics 8.4 needs to save its checkpoints).
The script runs offline: YOLO_OFFLINE=1, YOLO_AUTOINSTALL=False and a YOLO_CONFIG_DIR holding
matplotlib's DejaVuSans.ttf as Arial.ttf are set before Ultralytics is imported. Both tools get
--threads torch threads (Ultralytics would otherwise pick cpu_count - 1 = 1 on a 2-core machine).
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detpipe.model import checkpoint as ckpt  # noqa: E402
from detpipe.data.annotations import Record, read_lines  # noqa: E402
from detpipe.data.images import load_rgb  # noqa: E402
from detpipe.infer.predictor import Predictor  # noqa: E402
from detpipe.metrics import coco_eval, voc_map  # noqa: E402
from detpipe.data.annotations import ground_truths  # noqa: E402
from detpipe.params import Params, load_params, to_dict  # noqa: E402
from detpipe.train.phase import export_weights, phase_of, train_phase  # noqa: E402

YOLO_BATCH = 16
TIMING_CONF, TIMING_IOU = 0.25, 0.45
INSTALL = ("Ultralytics is not importable here (it is not a detpipe dependency). Make a bench venv:\n"
           "    python3 -m venv /tmp/yolo-venv\n"
           "    echo $PWD/.venv/lib/python3.11/site-packages > /tmp/yolo-venv/lib/python3.11/site-packages/detpipe-env.pth\n"
           "    /tmp/yolo-venv/bin/pip install --no-deps ultralytics ultralytics-thop\n"
           "    /tmp/yolo-venv/bin/pip install polars   # Ultralytics 8.4 reads its results CSV with polars")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--splits", default="data/splits", help="folder with train.txt, val.txt, test.txt")
    p.add_argument("--imgsz", type=int, default=320, help="input size for both tools (default 320)")
    p.add_argument("--detpipe-epochs", help="FROZEN+UNFROZEN epochs instead of params.yaml's, e.g. 1+1 for a smoke test")
    p.add_argument("--yolo-seconds", type=float,
                   help="Ultralytics time budget in seconds instead of detpipe's measured wall time (smoke tests)")
    p.add_argument("--threads", type=int, default=2, help="torch threads for both tools (default 2)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--timing-runs", type=int, default=2, help="timed passes over the test images (default 2)")
    p.add_argument("--out", default="reports/bench/compare_ultralytics.json")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (models, YOLO dataset, logs)")
    return p.parse_args()


# ------------------------------------------------------------------------------------------ detpipe

def bench_params(params: Params, imgsz: int, epochs: str | None, threads: int, device: str) -> Params:
    """params.yaml's recipe with the benchmark's input size, threads, device and (optionally) epochs."""
    train = params.train.replace(threads=threads, device=device)
    if epochs:
        frozen, unfrozen = (int(x) for x in epochs.split("+"))
        train = train.replace(freeze_epochs=frozen, unfreeze_epochs=unfrozen)
    return params.replace(model=params.model.replace(imgsz=imgsz), train=train)


def train_detpipe(params: Params, splits: Path, work: Path) -> dict:
    """Both phases as stages/train.py runs them; returns wall time, best weights and throughput."""
    train, val = read_lines(splits / "train.txt"), read_lines(splits / "val.txt")
    inputs = [str(splits / "train.txt"), str(splits / "val.txt")]
    start = time.time()
    frozen = train_phase(params, "frozen", train, val, inputs, work / "ckpt", work / "frozen.tsv")
    ckpt.save_atomic(export_weights(frozen, "last"), work / "frozen.pt")
    state = train_phase(params, "unfrozen", train, val, inputs + [str(work / "frozen.pt")], work / "ckpt",
                        work / "unfrozen.tsv", str(work / "frozen.pt"))
    ckpt.save_atomic(export_weights(state, "best"), work / "detpipe_best.pt")
    wall = time.time() - start
    rows = {name: _tsv_throughput(work / f"{name}.tsv", len(train), phase_of(params, name).batch_size)
            for name in ("frozen", "unfrozen")}
    images = sum(r["images"] for r in rows.values())
    seconds = sum(r["seconds"] for r in rows.values())
    return {"wall_seconds": wall, "weights": work / "detpipe_best.pt", "epochs": sum(r["epochs"] for r in rows.values()),
            "train_images_per_s": images / max(seconds, 1e-9),
            "train_images_per_s_frozen": rows["frozen"]["images"] / max(rows["frozen"]["seconds"], 1e-9),
            "train_images_per_s_unfrozen": rows["unfrozen"]["images"] / max(rows["unfrozen"]["seconds"], 1e-9),
            "train_step_seconds": seconds, "train_images": images,
            "epoch_images_per_s": rows["frozen"]["rates"] + rows["unfrozen"]["rates"],
            "train_images_per_s_median_epoch": _median(rows["frozen"]["rates"] + rows["unfrozen"]["rates"]),
            "best_epoch": state["best"]["epoch"], "best_val_map50": state["best"]["val_map50"]}


def _tsv_throughput(path: Path, n_train: int, batch: int) -> dict:
    """Images and training-step seconds of a phase: images_per_s is images / step seconds per epoch."""
    per_epoch = (n_train // batch) * batch if n_train > batch else n_train  # drop_last, as train_phase
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    seconds = sum(per_epoch / float(r["images_per_s"]) for r in rows if float(r["images_per_s"]) > 0)
    return {"epochs": len(rows), "images": per_epoch * len(rows), "seconds": seconds,
            "rates": [float(r["images_per_s"]) for r in rows]}


def evaluate_detpipe(weights: Path, params: Params, test: list[Record], images: list[np.ndarray], device: str) -> dict:
    predictor = Predictor(weights, device, conf=params.map.confidence, iou=params.predict.nms_iou,
                          max_det=params.predict.max_det, imgsz=params.model.imgsz)
    dets = predictor([im for im in images], batch_size=8)
    return {**score(test, dets, params), "nms_iou": params.predict.nms_iou, "max_det": params.predict.max_det}


def detpipe_timer(weights: Path, params: Params, device: str):
    """One image -> boxes at the timing settings (batch 1)."""
    predictor = Predictor(weights, device, conf=TIMING_CONF, iou=TIMING_IOU, max_det=params.predict.max_det,
                          imgsz=params.model.imgsz)
    return lambda rgb: predictor([rgb], batch_size=1)


# ------------------------------------------------------------------------------------- ultralytics

def import_ultralytics(config_dir: Path, threads: int):
    """Ultralytics set up to run offline, with `threads` torch threads; exits with advice if missing."""
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "False"
    os.environ.setdefault("YOLO_CONFIG_DIR", str(config_dir))
    config = Path(os.environ["YOLO_CONFIG_DIR"])
    config.mkdir(parents=True, exist_ok=True)
    import matplotlib
    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):  # check_font() would otherwise download them
        if not (config / name).exists():
            shutil.copy(font, config / name)
    try:
        import ultralytics
        from ultralytics import YOLO
        from ultralytics.utils import torch_utils
    except ImportError:
        sys.exit(INSTALL)
    # select_device() resets torch threads to NUM_THREADS (cpu_count - 1) for every train/predict.
    torch_utils.NUM_THREADS = threads
    return YOLO, ultralytics.__version__


def write_yolo_dataset(splits: Path, root: Path, classes: list[str]) -> tuple[Path, dict]:
    """train/val/test as a YOLO dataset under root: symlinked images, normalised labels, data.yaml.

    Difficult objects are left out of the labels (detpipe trains without them; the test split is
    scored by detpipe's evaluator from the split file, where they stay difficult).
    """
    counts = {}
    for split in ("train", "val", "test"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        records = read_lines(splits / f"{split}.txt")
        for i, r in enumerate(records):
            # Index-prefixed ASCII names: source paths may repeat a name or hold spaces.
            name = f"{i:06d}{Path(r.path).suffix.lower()}"
            os.symlink(Path(r.path).resolve(), root / "images" / split / name)
            h, w = load_rgb(r.path).shape[:2]
            keep = ~r.difficult
            lines = []
            for (x1, y1, x2, y2), c in zip(r.boxes[keep], r.labels[keep]):
                lines.append(f"{int(c)} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} "
                             f"{(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}")
            (root / "labels" / split / f"{i:06d}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
        counts[split] = len(records)
    data = root / "data.yaml"
    data.write_text(json.dumps({"path": str(root), "train": "images/train", "val": "images/val",
                                "test": "images/test", "names": classes}, indent=1))
    return data, counts


class YoloMeter:
    """Ultralytics callbacks: training-step seconds and images per epoch, and the thread count."""

    def __init__(self, threads: int) -> None:
        self.threads, self.epochs, self.batches, self.t0 = threads, [], 0, 0.0
        self.threads_seen: set[int] = set()

    def on_train_epoch_start(self, trainer) -> None:
        torch.set_num_threads(self.threads)
        self.batches, self.t0 = 0, time.perf_counter()

    def on_train_batch_start(self, trainer) -> None:
        self.batches += 1

    def on_train_epoch_end(self, trainer) -> None:
        images = min(self.batches * trainer.batch_size, len(trainer.train_loader.dataset))
        self.epochs.append((images, time.perf_counter() - self.t0))
        self.threads_seen.add(torch.get_num_threads())


def train_yolo(YOLO, data: Path, work: Path, args: argparse.Namespace, seconds: float) -> dict:
    torch.manual_seed(0)
    model = YOLO("yolov8n.yaml")  # architecture only: nothing downloaded
    meter = YoloMeter(args.threads)
    for event in ("on_train_epoch_start", "on_train_batch_start", "on_train_epoch_end"):
        model.add_callback(event, getattr(meter, event))
    start = time.time()
    model.train(data=str(data), time=seconds / 3600, epochs=1000, imgsz=args.imgsz, batch=YOLO_BATCH, workers=0,
                device=args.device, cache="ram", val=True, plots=False, amp=False, pretrained=False, seed=0,
                project=str(work / "runs"), name="yolov8n", exist_ok=True, verbose=False)
    wall = time.time() - start
    trainer = model.trainer
    images = sum(n for n, _ in meter.epochs)
    step_seconds = sum(s for _, s in meter.epochs)
    best = Path(trainer.best) if Path(trainer.best).is_file() else Path(trainer.last)
    return {"wall_seconds": wall, "time_budget_s": seconds, "weights": best, "epochs": len(meter.epochs),
            "train_images_per_s": images / max(step_seconds, 1e-9), "train_step_seconds": step_seconds,
            "train_images": images, "threads": sorted(meter.threads_seen),
            "epoch_images_per_s": [n / max(s, 1e-9) for n, s in meter.epochs],
            "train_images_per_s_median_epoch": _median([n / max(s, 1e-9) for n, s in meter.epochs]), "best_fitness": _num(trainer.best_fitness)}


def evaluate_yolo(YOLO, weights: Path, params: Params, test: list[Record], images: list[np.ndarray], args):
    """Test-split scores at Ultralytics' val settings (and IoU 0.45), plus a batch-1 timing callable."""
    model = YOLO(str(weights))
    bgr = [np.ascontiguousarray(im[..., ::-1]) for im in images]  # the pixels detpipe sees, in cv2 order

    def predict(im, conf, iou, max_det):
        r = model.predict(im, imgsz=args.imgsz, conf=conf, iou=iou, max_det=max_det, device=args.device,
                          verbose=False)[0]
        return {"boxes": r.boxes.xyxy.cpu().double().numpy(), "scores": r.boxes.conf.cpu().double().numpy(),
                "labels": r.boxes.cls.cpu().numpy().astype(np.int64)}

    out = {}
    for iou in (0.7, 0.45):  # 0.7 and max_det 300: Ultralytics' own validation settings
        dets = [predict(im, params.map.confidence, iou, 300) for im in bgr]
        out[f"iou{iou}"] = {**score(test, dets, params), "nms_iou": iou, "max_det": 300}
    def timer(rgb: np.ndarray) -> dict:  # the RGB -> BGR copy costs ~0.05 ms of the timed call
        return predict(np.ascontiguousarray(rgb[..., ::-1]), TIMING_CONF, TIMING_IOU, params.predict.max_det)

    return {**out["iou0.7"], "at_iou0.45": out["iou0.45"]}, timer


# ------------------------------------------------------------------------------------------ common

def score(test: list[Record], dets: list[dict], params: Params) -> dict:
    """detpipe's evaluator on the test split: VOC mAP50 (all-point) and COCO mAP50-95."""
    gts = ground_truths(test)
    n = len(params.data.classes)
    voc = voc_map(gts, dets, n, params.map.min_overlap, params.map.voc07)
    coco = coco_eval(gts, dets, n)
    return {"map50": float(voc.map), "map50_95": float(coco.stats[0]),
            "detections": int(sum(len(d["scores"]) for d in dets))}


def time_interleaved(fns: dict, images: list[np.ndarray], runs: int, warmup: int = 3) -> dict:
    """Wall-clock ms per fn(image) call: median and mean over `runs` passes of the images.

    The tools alternate image by image, so load from other users' jobs hits both alike; the
    median ignores the calls such a job happened to stall.
    """
    for im in images[:warmup]:
        for fn in fns.values():
            fn(im)
    ms = {name: [] for name in fns}
    for _ in range(runs):
        for im in images:
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn(im)
                ms[name].append(1000 * (time.perf_counter() - t0))
    return {name: {"median": float(np.median(v)), "mean": float(np.mean(v))} for name, v in ms.items()}


def _median(values: list[float]) -> float:
    """Robust to the epochs another user's job stalled (the mean is not)."""
    return float(np.median(values)) if values else 0.0


def _num(x) -> float | None:
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def table(d: dict, y: dict) -> tuple[str, list[dict]]:
    rows = [("mAP50 (VOC, test)", d["map50"], y["map50"], "{:.3f}"),
            ("mAP50-95 (COCO, test)", d["map50_95"], y["map50_95"], "{:.3f}"),
            ("train images/s (all)", d["train_images_per_s"], y["train_images_per_s"], "{:.1f}"),
            ("train images/s (med ep)", d["train_images_per_s_median_epoch"], y["train_images_per_s_median_epoch"],
             "{:.1f}"),
            ("inference ms/image b1 *", d["ms_per_image"], y["ms_per_image"], "{:.1f}"),
            ("train wall time s", d["wall_seconds"], y["wall_seconds"], "{:.0f}"),
            ("epochs", d["epochs"], y["epochs"], "{:.0f}")]
    lines = [f"{'':<26}{'detpipe':>10}{'yolov8n':>10}{'ratio d/u':>11}"]
    out = []
    for name, a, b, fmt in rows:
        ratio = a / b if b else None
        lines.append(f"{name:<26}{fmt.format(a):>10}{fmt.format(b):>10}"
                     + (f"{ratio:>11.2f}" if ratio is not None else f"{'n/a':>11}"))
        out.append({"metric": name, "detpipe": a, "ultralytics": b, "ratio": ratio})
    return "\n".join(lines), out


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    splits = Path(args.splits)
    params = bench_params(load_params(args.params), args.imgsz, args.detpipe_epochs, args.threads, args.device)
    work = Path(tempfile.mkdtemp(prefix="compare-ultralytics-"))
    if not all(importlib.util.find_spec(m) for m in ("ultralytics", "polars")):
        sys.exit(INSTALL)  # before an hour of training; imported only after detpipe has run
    test = read_lines(splits / "test.txt")
    images = [load_rgb(r.path) for r in test]
    load_before = os.getloadavg()  # other users' jobs slow both tools; the report records the load
    print(f"== temp dir {work}; imgsz {args.imgsz}, {args.threads} threads, device {args.device}", flush=True)
    try:
        print(f"== detpipe: {params.model.backbone}, {params.train.freeze_epochs}+{params.train.unfreeze_epochs} "
              f"epochs (params {args.params})", flush=True)
        det = train_detpipe(params, splits, work)
        torch.set_num_threads(args.threads)
        det.update(evaluate_detpipe(det["weights"], params, test, images, args.device))
        print(f"== detpipe: {det['wall_seconds']:.0f} s, test mAP50 {det['map50']:.3f}", flush=True)
        det["load_avg_after"] = os.getloadavg()
        YOLO, version = import_ultralytics(work / "yolo_config", args.threads)
        budget = args.yolo_seconds or det["wall_seconds"]
        data, counts = write_yolo_dataset(splits, work / "yolo_data", list(params.data.classes))
        print(f"== ultralytics {version} YOLOv8n: time budget {budget:.0f} s ({budget / 3600:.4f} h), "
              f"{counts}", flush=True)
        yolo = train_yolo(YOLO, data, work, args, budget)
        torch.set_num_threads(args.threads)
        scores, yolo_timer = evaluate_yolo(YOLO, yolo["weights"], params, test, images, args)
        yolo.update(scores)
        torch.set_num_threads(args.threads)
        timing = time_interleaved({"detpipe": detpipe_timer(det["weights"], params, args.device),
                                   "ultralytics": yolo_timer}, images, args.timing_runs)
        for side, result in (("detpipe", det), ("ultralytics", yolo)):
            result["ms_per_image"] = timing[side]["median"]
            result["ms_per_image_mean"] = timing[side]["mean"]
        yolo["load_avg_after"] = os.getloadavg()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    text, rows = table(det, yolo)
    note = (f"\nimgsz {args.imgsz}, CPU, {args.threads} torch threads; {len(test)} test images scored by detpipe's "
            f"evaluator (conf {params.map.confidence}); detpipe NMS IoU {params.predict.nms_iou}, YOLOv8n its "
            f"val default 0.7 (at 0.45: mAP50 {yolo['at_iou0.45']['map50']:.3f}, mAP50-95 "
            f"{yolo['at_iou0.45']['map50_95']:.3f}); * median ms of one call per in-memory image (letterbox, forward, NMS), conf {TIMING_CONF}, the two tools alternating.\n"
            f"detpipe train images/s frozen {det['train_images_per_s_frozen']:.1f}, unfrozen "
            f"{det['train_images_per_s_unfrozen']:.1f}; YOLOv8n time budget {yolo['time_budget_s']:.0f} s "
            f"(its wall time adds dataset setup and the final validation).")
    print("\n" + text + note, flush=True)
    report = {"table": rows, "detpipe": {k: (str(v) if isinstance(v, Path) else v) for k, v in det.items()},
              "ultralytics": {k: (str(v) if isinstance(v, Path) else v) for k, v in yolo.items()},
              "settings": {"imgsz": args.imgsz, "threads": args.threads, "device": args.device,
                           "detpipe_epochs": args.detpipe_epochs, "yolo_seconds": args.yolo_seconds,
                           "yolo_batch": YOLO_BATCH, "yolo_val": True, "yolo_cache": "ram",
                           "timing_conf": TIMING_CONF, "timing_iou": TIMING_IOU,
                           "ultralytics_version": version, "torch": torch.__version__,
                           "cpu_count": os.cpu_count(), "machine": platform.platform(),
                           "load_avg_before": load_before},
              "params": to_dict(params)}
    for side in ("detpipe", "ultralytics"):
        report[side].pop("weights", None)  # deleted with the temp dir
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

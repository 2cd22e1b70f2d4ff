"""Benchmark: `python -m detpipe evaluate` as a user waits for it, against pycocotools and
faster-coco-eval, all measured in this one run on the same boxes.

    python bench/bench_metrics.py            # 5,000 images x 20 classes, ~10 GT, ~100 dets each
    python bench/bench_metrics.py --small    # 500 images, for a quick check

The case is written to a temporary folder twice: Cartucho txt folders (one file per image, as
`predict --save-txt` writes them) and COCO JSON files. Then:
- ours, whole process: `python -m detpipe evaluate` in a fresh subprocess (interpreter start,
  imports, parsing, VOC + COCO, CSVs and figures), on the txt folders and on the JSON files;
- ours, compute only: `voc_map` + `coco_eval` in this process on in-memory arrays;
- the references, in this process (so their interpreter start is NOT counted against them):
  load = COCO(gt.json) + loadRes(det.json), eval = evaluate + accumulate + summarize.
The COCO stats of every tool are checked equal to ours. Targets (issue #18): our whole process
<= 1/20 of pycocotools' load + eval and <= 1/3 of faster-coco-eval's. faster-coco-eval is
optional (`pip install faster-coco-eval`); without it that line says it was skipped.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from detpipe.metrics import coco_eval, voc_map  # noqa: E402
from detpipe.metrics.io import to_coco_json  # noqa: E402

TARGETS = {"pycocotools": 20.0, "faster_coco_eval": 3.0}  # reference load+eval / our whole process


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


def write_case(folder: Path, gts: list[dict], dets: list[dict], names: list[str]) -> None:
    """gt/ and det/ txt folders (det lines in predict --save-txt's format) and gt.json, det.json."""
    (folder / "gt").mkdir(parents=True)
    (folder / "det").mkdir()
    for i, (g, d) in enumerate(zip(gts, dets)):
        (folder / "gt" / f"img{i:06d}.txt").write_text("".join(
            f"{names[c]} {b[0]:.1f} {b[1]:.1f} {b[2]:.1f} {b[3]:.1f}{' difficult' if f else ''}\n"
            for b, c, f in zip(g["boxes"], g["labels"], g["difficult"])))
        (folder / "det" / f"img{i:06d}.txt").write_text("".join(
            f"{names[c]} {s:.6f} {b[0]:.2f} {b[1]:.2f} {b[2]:.2f} {b[3]:.2f}\n"
            for b, c, s in zip(d["boxes"], d["labels"], d["scores"])))
    gt_json, res_json = to_coco_json(gts, dets, names)
    (folder / "gt.json").write_text(json.dumps(gt_json))
    (folder / "det.json").write_text(json.dumps(res_json))


def timed(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        gc.collect()
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


# Runs the command and prints its wall time and peak RSS. A child's ru_maxrss starts from its
# parent's peak (Linux keeps it across fork and exec), so the command must be forked from this
# small launcher, not from the bench process that holds the whole case in memory.
LAUNCHER = """
import json, resource, subprocess, sys, time
t = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
wall = time.perf_counter() - t
print(json.dumps([wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, done.returncode, done.stderr]))
"""


def run_cli(args: list[str], repeat: int) -> tuple[float, float, dict]:
    """Best wall time of `python -m detpipe evaluate ARGS --out <fresh dir>`, its peak RSS (MB)
    and its metrics."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    best, rss, metrics = float("inf"), 0.0, {}
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as out:
            cmd = [sys.executable, "-m", "detpipe", "evaluate", *args, "--out", out]
            launched = subprocess.run([sys.executable, "-c", LAUNCHER, *cmd], capture_output=True,
                                      text=True, env=env, check=True)
            wall, peak, code, err = json.loads(launched.stdout)
            if code:
                raise SystemExit(f"evaluate failed:\n{err}")
            best, rss = min(best, wall), max(rss, peak)
            metrics = json.loads((Path(out) / "metrics.json").read_text())
    return best, rss, metrics


def run_reference(gt_path: Path, det_path: Path, module: str) -> tuple[float, float, np.ndarray]:
    """(load seconds, eval seconds, the 12 stats) of pycocotools or faster-coco-eval from files."""
    with contextlib.redirect_stdout(io.StringIO()):
        if module == "pycocotools":
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval
        else:
            from faster_coco_eval import COCO
            from faster_coco_eval import COCOeval_faster as COCOeval
        gc.collect()
        t0 = time.perf_counter()
        gt = COCO(str(gt_path))
        det = gt.loadRes(str(det_path))
        t1 = time.perf_counter()
        e = COCOeval(gt, det, "bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
        t2 = time.perf_counter()
    return t1 - t0, t2 - t1, np.asarray(e.stats[:12], dtype=np.float64)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="500 images instead of 5,000")
    ap.add_argument("--images", type=int)
    ap.add_argument("--repeat", type=int, default=3, help="runs of ours (best is kept)")
    ap.add_argument("--no-pycocotools", action="store_true", help="skip the slow reference")
    args = ap.parse_args()
    n_images = args.images or (500 if args.small else 5000)
    C = 20
    names = [f"class{k:02d}" for k in range(C)]  # sorted order = index order, as txt mode sorts
    gts, dets = make_case(n_images, C, 10, 100)
    n_gt = sum(len(g["labels"]) for g in gts)
    n_det = sum(len(d["scores"]) for d in dets)
    print(f"case: {n_images} images, {C} classes, {n_gt} ground truths, {n_det} detections")

    t_voc, voc = timed(lambda: voc_map(gts, dets, C), repeat=args.repeat)
    t_coco, ours = timed(lambda: coco_eval(gts, dets, C), repeat=args.repeat)
    rows = [("ours: VOC mAP50, compute only", t_voc), ("ours: COCO 12 stats, compute only", t_coco)]
    with tempfile.TemporaryDirectory() as tmp:
        case = Path(tmp)
        write_case(case, gts, dets, names)
        txt_args = ["--gt", str(case / "gt"), "--det", str(case / "det")]
        t_txt, rss_txt, m_txt = run_cli(txt_args, args.repeat)
        t_plots, _, _ = run_cli(txt_args + ["--plots"], args.repeat)
        t_json, rss_json, m_json = run_cli(["--coco-gt", str(case / "gt.json"), "--coco-det",
                                            str(case / "det.json")], args.repeat)
        rows += [(f"ours: `detpipe evaluate` txt folders, whole process ({rss_txt:.0f} MB)", t_txt),
                 ("ours: the same with --plots (3 figures)", t_plots),
                 (f"ours: `detpipe evaluate` COCO JSON, whole process ({rss_json:.0f} MB)", t_json)]
        for m, what in ((m_txt, "txt"), (m_json, "json")):
            diff = max(abs(m["map50"] - voc.map), abs(m["map50_95"] - ours.stats[0]))
            if diff > 1e-6:
                raise SystemExit(f"evaluate ({what}) differs from the in-memory result by {diff:.2e}")
        refs = {}
        for name in ([] if args.no_pycocotools else ["pycocotools"]) + ["faster_coco_eval"]:
            try:
                __import__(name)
            except ImportError:
                print(f"{name}: not installed (pip install {name.replace('_', '-')}) -- skipped")
                continue
            t_load, t_eval, stats = run_reference(case / "gt.json", case / "det.json", name)
            refs[name] = t_load + t_eval
            rows.append((f"{name}: load {t_load:.2f} s + eval {t_eval:.2f} s", t_load + t_eval))
            diff = float(np.max(np.abs(stats - ours.stats)))
            print(f"{name}: max |stat - ours| = {diff:.2e}")
            if diff > 1e-6:
                raise SystemExit(f"{name}'s COCO stats differ from ours by {diff:.2e}")
    print(f"\n{'what (wall seconds; peak RSS of the process)':<64} {'seconds':>8}")
    for what, t in rows:
        print(f"{what:<64} {t:8.3f}")
    # the target (issue #18) is on the txt folders; the other columns are for information
    print(f"\n{'reference load+eval / ours':<28}{'txt, whole process':>20}{'target':>8}  {'':<7}"
          f"{'with --plots':>13}{'COCO JSON':>11}{'compute only':>14}")
    for name, t_ref in refs.items():
        verdict = "ok" if t_ref / t_txt >= TARGETS[name] else "MISSED"
        print(f"{name:<28}{t_ref / t_txt:19.1f}x{TARGETS[name]:7.0f}x  {verdict:<7}"
              f"{t_ref / t_plots:12.1f}x{t_ref / t_json:10.1f}x{t_ref / (t_voc + t_coco):13.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

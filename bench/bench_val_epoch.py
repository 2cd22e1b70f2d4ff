"""Benchmark: what the per-epoch validation costs with the history's new scores, on the demo's
val split, before (VOC mAP50 only) and after (`metrics.epoch.val_scores`: + COCO mAP50-95,
precision and recall at best F1), measured in this one run on the same detections.

    python bench/bench_val_epoch.py          # run through /work/bin/quiet on a shared machine

A validation pass is the forward passes and NMS over the val images (`engine.evaluate_batches`,
as `train.phase._validate` runs it, at map.confidence) and then the scoring. The model is the
demo's config freshly initialised: its many low-confidence boxes (up to predict.max_det per
image) are the costly case for the scoring. Prints the median of --repeat timings of each part
and the ratio of a whole validation pass after/before.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from detpipe.data.dataset_check import check_dataset  # noqa: E402
from detpipe.data.splits import split_records  # noqa: E402
from detpipe.metrics import voc_map  # noqa: E402
from detpipe.metrics.epoch import val_scores  # noqa: E402
from detpipe.model.detector import build_model  # noqa: E402
from detpipe.params import load_params  # noqa: E402
from detpipe.data.annotations import ground_truths  # noqa: E402
from detpipe.train.engine import eval_loader, evaluate_batches  # noqa: E402
from detpipe.train.phase import model_config, resolve_recipe  # noqa: E402


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    params = load_params(args.params)
    records = check_dataset(params.data, base=ROOT).records
    splits, _ = split_records(records, len(params.data.classes),
                              [params.split.train, params.split.val, params.split.test], params.seed, params.data.root)
    params, _ = resolve_recipe(params, splits["train"])  # model.imgsz may be `auto`: the size training uses
    val = splits["val"]
    torch.manual_seed(params.seed)
    model = build_model(model_config(params), "none").eval()
    loader = eval_loader(val, params.model.imgsz, params.train.unfreeze_batch_size, 0)
    gts, n_cls = ground_truths(val), len(params.data.classes)

    def forward():
        _, dets = evaluate_batches(model, loader, torch.device("cpu"), params.model.imgsz, params.map.confidence,
                                   params.predict.nms_iou, params.predict.max_det)
        return [dets[i] for i in sorted(dets)]

    dets = forward()
    t_forward = median_time(forward, args.repeat)
    t_before = median_time(lambda: voc_map(gts, dets, n_cls, 0.5), args.repeat)
    t_after = median_time(lambda: val_scores(gts, dets, n_cls), args.repeat)
    n_det = sum(len(d["scores"]) for d in dets)
    print(f"demo val split: {len(val)} images, {n_det} detections at confidence >= {params.map.confidence}")
    print(f"forward passes + NMS: {t_forward * 1000:.0f} ms")
    print(f"scoring before (VOC mAP50):                       {t_before * 1000:.1f} ms")
    print(f"scoring after (+ COCO mAP50-95, P and R at best F1): {t_after * 1000:.1f} ms")
    print(f"validation pass after / before: {(t_forward + t_after) / (t_forward + t_before):.3f} "
          f"(+{(t_after - t_before) * 1000:.0f} ms per epoch)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the stride-4 level (model.p2) costs on this CPU: training step and inference, p2 off vs on.

The params.yaml model is built twice, with model.p2 false and true (same seed, untrained weights:
the cost of a pass does not depend on the weight values). For each it times the unfrozen training
step (bench_train.py's: engine.train_step with the autocast and memory layout training uses) on
synthetic batches of the training batch size, and inference through the Predictor with the torch
backend (fused BatchNorm, decode + NMS) at batch 1 and 8 on bench_predict's synthetic images, then prints the
on/off ratios measured in this same run. No dataset needed:

    python bench/bench_p2.py [--params params.yaml] [--imgsz 320] [--batches 6] [--runs 8]
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_train import step_rate  # noqa: E402
from detpipe.cpus import usable_cpus  # noqa: E402
from detpipe.infer.predictor import Predictor, sample_images, time_parts  # noqa: E402
from detpipe.model.detector import build_model, describe, model_summary  # noqa: E402
from detpipe.model.load import model_config  # noqa: E402
from detpipe.params import load_params  # noqa: E402


def synthetic_batches(n: int, batch: int, size: int, seed: int = 0) -> list[tuple]:
    """Batches shaped as the training loader's: uint8 images [B, 3, S, S], targets [B, G, 5] of
    small boxes (8-40 px), padded with -1 rows."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=gen)
        targets = torch.full((batch, 6, 5), -1.0)
        for b in range(batch):
            k = int(torch.randint(1, 7, (), generator=gen))
            xy = torch.rand(k, 2, generator=gen) * (size - 48)
            wh = 8 + torch.rand(k, 2, generator=gen) * 32
            cls = torch.randint(0, 2, (k, 1), generator=gen).float()
            targets[b, :k] = torch.cat([cls, xy, xy + wh], 1)
        out.append((images, targets, None, None))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batches", type=int, default=6, help="timed training steps per model")
    p.add_argument("--runs", type=int, default=8, help="timed inference batches per model and batch size")
    args = p.parse_args()
    params = load_params(args.params)
    torch.set_num_threads(params.train.threads or usable_cpus())
    bs, size = params.train.unfreeze_batch_size, args.imgsz
    batches = synthetic_batches(args.batches, bs, size)
    images = sample_images()
    print(f"CPU, {torch.get_num_threads()} threads, imgsz {size}, train batch {bs}")
    results = {}
    for p2 in (False, True):
        torch.manual_seed(0)
        model = build_model(replace(model_config(params), p2=p2))
        print(f"p2 {str(p2).lower():5s} model {describe(model.config, model_summary(model, size))}")
        r = {"train images/s": step_rate(model, batches, False, params.train, params.lr)}
        predictor = Predictor.from_model(model.eval(), params.data.classes, size, torch.device("cpu"),
                                         0.25, 0.45, 100, backend="torch")
        for b in (1, 8):
            t = time_parts(predictor, images, b, runs=args.runs, draw=False)
            r[f"infer ms/img b{b}"], r[f"forward ms/img b{b}"] = t["total"], t["forward"]
        results[p2] = r
        print("           " + "  ".join(f"{k} {v:.1f}" for k, v in r.items()), flush=True)
    off, on = results[False], results[True]
    print(f"train step: p2 on takes {off['train images/s'] / on['train images/s']:.2f}x the time of p2 off")
    for b in (1, 8):
        print(f"inference batch {b}: p2 on takes {on[f'infer ms/img b{b}'] / off[f'infer ms/img b{b}']:.2f}x the time "
              f"(forward alone {on[f'forward ms/img b{b}'] / off[f'forward ms/img b{b}']:.2f}x)")


if __name__ == "__main__":
    main()

"""Training throughput: data loading vs. the training step, frozen vs. unfrozen backbone.

Prints images/s of the loader alone (decode, letterbox, augmentation, mosaic) with 0 and 2
workers, of the frozen and unfrozen training step alone (on batches already in memory), and the
ratios; plus parameters and GFLOPs of the model at the input size. Run from the repo root after
`dvc repro` has written data/splits/train.txt:

    python bench/bench_train.py [--params params.yaml] [--batches 8]
"""
from __future__ import annotations

import argparse
import os
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from detpipe.annotations import read_lines
from detpipe.data import Augment, DetectionDataset, make_loader
from detpipe.engine import build_optimizer
from detpipe.loss import detection_loss
from detpipe.params import load_params
from detpipe.training import model_config
from detpipe.model import build_model


def loader_rate(ds: DetectionDataset, batch: int, workers: int, batches: int) -> float:
    loader = make_loader(ds, batch, epoch=1, num_workers=workers, shuffle=True)
    it, n = iter(loader), 0
    next(it)  # worker start-up is not throughput
    start = time.perf_counter()
    for _ in range(batches):
        n += next(it)[0].shape[0]
    return n / (time.perf_counter() - start)


def step_rate(model, batches: list, frozen: bool, lr: float) -> float:
    model.backbone.freeze(frozen)
    model.train()
    opt = build_optimizer(model, "sgd", lr, 0.9, 5e-4)
    images, targets, _, _ = batches[0]
    loss, _ = detection_loss(model(images), targets)  # warm-up
    loss.backward()
    start, n = time.perf_counter(), 0
    for images, targets, _, _ in batches:
        opt.zero_grad(set_to_none=True)
        loss, _ = detection_loss(model(images), targets)
        loss.backward()
        opt.step()
        n += images.shape[0]
    return n / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--train", default="data/splits/train.txt")
    p.add_argument("--batches", type=int, default=8)
    args = p.parse_args()
    params = load_params(args.params)
    torch.set_num_threads(params.train.threads or os.cpu_count() or 1)
    bs, size = params.train.unfreeze_batch_size, params.model.imgsz
    ds = DetectionDataset(read_lines(args.train), size, params.seed, Augment.from_train_params(params.train))
    model = build_model(model_config(params))
    n_params = sum(p.numel() for p in model.parameters())
    with FlopCounterMode(display=False) as fc:
        model.eval()(torch.zeros(1, 3, size, size))
    print(f"model {params.model.backbone} + neck {params.model.neck_channels}: {n_params / 1e6:.2f} M parameters, "
          f"{fc.get_total_flops() / 2e9:.2f} GFLOPs (multiply-adds x2 / 2) at {size}x{size}")
    rates = {f"loader, {w} workers": loader_rate(ds, bs, w, args.batches) for w in (0, 2)}
    batches = list(make_loader(ds, bs, 1, 0, True))[: args.batches]
    rates["train step, frozen backbone"] = step_rate(model, batches, True, params.lr)
    rates["train step, unfrozen"] = step_rate(model, batches, False, params.lr)
    for name, r in rates.items():
        print(f"{name:32s} {r:7.1f} images/s")
    print(f"loader (0 workers) / unfrozen step: {rates['loader, 0 workers'] / rates['train step, unfrozen']:.2f}x  "
          f"(> 1 means the loader keeps up even in the main process)")
    print(f"frozen / unfrozen step: {rates['train step, frozen backbone'] / rates['train step, unfrozen']:.2f}x")


if __name__ == "__main__":
    main()

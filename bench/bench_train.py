"""Training throughput: data loading vs. the training step, frozen vs. unfrozen backbone.

Prints images/s of the loader alone (decode, letterbox, augmentation, mosaic; images cached as
in training when train.cache_images) with 0 and 2 workers, of the frozen and unfrozen training
step alone (on batches already in memory, with the autocast dtype and memory layout training
uses on this device), and the ratios; plus parameters and GFLOPs of the model at the input size,
and the unfrozen step's share of this CPU's matmul peak in the dtype it computes in (bfloat16 where
the CPU has it), both measured here at the same thread count: a step's FLOPs are 3x the forward's
(the backward costs about twice the forward), the peak is the rate of large square matmuls.
With --profile, torch.profiler's top operators of the unfrozen step. Run from the repo root after
`dvc repro` has written data/splits/train.txt:

    python bench/bench_train.py [--params params.yaml] [--batches 8] [--imgsz 320] [--profile]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from detpipe.cpus import usable_cpus
from detpipe.train import accel
from detpipe.data.annotations import read_lines
from detpipe.data.dataset import Augment, DetectionDataset, make_loader
from detpipe.train.engine import build_optimizer, train_step
from detpipe.train.loss import LossWeights
from detpipe.train.phase import resolve_recipe
from detpipe.params import load_params
from detpipe.model.device import channels_last
from detpipe.model.load import model_config
from detpipe.model.detector import build_model, describe, model_summary


def loader_rate(ds: DetectionDataset, batch: int, workers: int, batches: int) -> float:
    loader = make_loader(ds, batch, epoch=1, num_workers=workers, shuffle=True)
    it, n = iter(loader), 0
    next(it)  # worker start-up is not throughput
    start = time.perf_counter()
    for _ in range(batches):
        n += next(it)[0].shape[0]
    return n / (time.perf_counter() - start)


def make_step(model, train, lr: float):
    """The training step itself (engine.train_step: autocast, loss, scaler, clipping, optimizer),
    with the memory layout training uses."""
    device = torch.device("cpu")
    dtype = accel.amp_dtype(train, device)
    fmt = torch.channels_last if channels_last(device, model) else torch.preserve_format
    model.to(memory_format=fmt)
    opt = build_optimizer(model, train.optimizer, lr, train.momentum, train.weight_decay)
    scaler, weights = accel.grad_scaler(train, device), LossWeights.from_train_params(train)

    def step(images, targets) -> None:
        train_step(model, images.contiguous(memory_format=fmt), targets, opt, scaler, train.grad_clip, weights, dtype)
    return step


def step_rate(model, batches: list, frozen: bool, train, lr: float) -> float:
    model.backbone.freeze(frozen)
    model.train()
    step = make_step(model, train, lr)
    step(*batches[0][:2])  # warm-up
    start, n = time.perf_counter(), 0
    for images, targets, _, _ in batches:
        step(images, targets)
        n += images.shape[0]
    return n / (time.perf_counter() - start)


def matmul_peak(dtype: torch.dtype, seconds: float = 2.0, n: int = 1024) -> float:
    """FLOP/s of n x n matmuls in `dtype` at the current thread count: what this CPU's GEMM attains,
    the ceiling a convolution network's training step is measured against."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b  # warm-up: oneDNN picks and caches its kernel
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
    return 2 * n ** 3 * reps / (time.perf_counter() - start)


def profile_step(model, batches: list, train, lr: float, rows: int = 12) -> None:
    from torch.profiler import ProfilerActivity, profile
    model.backbone.freeze(False)
    model.train()
    step = make_step(model, train, lr)
    step(*batches[0][:2])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for images, targets, _, _ in batches[:3]:
            step(images, targets)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--train", default="data/splits/train.txt")
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--imgsz", type=int, default=0, help="input size (default: model.imgsz)")
    p.add_argument("--profile", action="store_true", help="print torch.profiler's top operators of the unfrozen step")
    args = p.parse_args()
    if not Path(args.train).is_file():
        raise SystemExit(f"error: {args.train} not found: run `dvc repro split` first (or pass --train)")
    records = read_lines(args.train)
    params, _ = resolve_recipe(load_params(args.params), records)  # `auto` settings as training resolves them
    torch.set_num_threads(params.train.threads or usable_cpus())
    bs, size = params.train.unfreeze_batch_size, args.imgsz or params.model.imgsz
    ds = DetectionDataset(records, size, params.seed, Augment.from_train_params(params.train),
                          cache=params.train.cache_images)
    model = build_model(model_config(params))
    dtype = accel.amp_dtype(params.train, torch.device("cpu"))
    print(f"CPU step: autocast {dtype or 'off (float32)'}, channels_last "
          f"{channels_last(torch.device('cpu'), model)}, {torch.get_num_threads()} threads")
    summary = model_summary(model, size)
    print("model", describe(model.config, summary))
    if ds.cache is not None:  # training decodes each image once, then reuses it: time the steady state
        for i in range(len(ds)):
            ds[i]
    rates = {f"loader, {w} workers": loader_rate(ds, bs, w, args.batches) for w in (0, 2)}
    batches = list(make_loader(ds, bs, 1, 0, True))[: args.batches]
    rates["train step, frozen backbone"] = step_rate(model, batches, True, params.train, params.lr)
    rates["train step, unfrozen"] = step_rate(model, batches, False, params.train, params.lr)
    for name, r in rates.items():
        print(f"{name:32s} {r:7.1f} images/s")
    print(f"loader (0 workers) / unfrozen step: {rates['loader, 0 workers'] / rates['train step, unfrozen']:.2f}x  "
          f"(> 1 means the loader keeps up even in the main process)")
    print(f"frozen / unfrozen step: {rates['train step, frozen backbone'] / rates['train step, unfrozen']:.2f}x")
    step_flops = 3 * summary["gflops"] * 1e9 * rates["train step, unfrozen"]
    peaks = {"float32": matmul_peak(torch.float32)}
    if dtype is not None:
        peaks[str(dtype).removeprefix("torch.")] = matmul_peak(dtype)
    for name, peak in peaks.items():
        print(f"matmul peak {name:9s} {peak / 1e9:7.1f} GFLOP/s")
    name, peak = list(peaks.items())[-1]  # the dtype the step computes in
    print(f"unfrozen step: {step_flops / 1e9:.1f} GFLOP/s = {step_flops / peak:.0%} of the {name} matmul peak")
    if args.profile:
        profile_step(model, batches, params.train, params.lr)


if __name__ == "__main__":
    main()

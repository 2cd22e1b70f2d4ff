"""Host synchronisations per training step: how often the GPU waits for Python.

Runs steps of detpipe's training loop (engine.train_one_epoch) on synthetic batches and counts,
per step after a warm-up, the operations that make the host wait for a CUDA device
(detpipe/train/hostsync.py: value reads, nonzero and boolean-mask indexing, device-to-host copies);
on CUDA also with torch's own sync debug mode. The optimizer is built as training builds it on
CUDA (fused), also on the CPU, since the CPU's unfused optimizer reads its step counters, which
are host tensors on CUDA too.

    python bench/bench_syncs.py [--device cpu|cuda] [--amp float16|bfloat16] [--steps 4]

The count of another detpipe version (e.g. before the loop kept its statistics on the device):
`git worktree add /tmp/old e74c07f && PYTHONPATH=/tmp/old python bench/bench_syncs.py`;
this script's own counter is used either way.
"""
from __future__ import annotations

import argparse
import importlib.util
import inspect
import warnings
from pathlib import Path

import torch

from detpipe.train import engine
from detpipe.model.detector import ModelConfig, build_model

HOSTSYNC = Path(__file__).resolve().parents[1] / "detpipe" / "train" / "hostsync.py"


def _counter_class():
    """HostSyncCounter from this repository, whichever detpipe is imported."""
    spec = importlib.util.spec_from_file_location("_hostsync", HOSTSYNC)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.HostSyncCounter


def _optimizer(model) -> torch.optim.Optimizer:
    """AdamW as training builds it on CUDA (fused), also from a detpipe without the `fused` switch."""
    if "fused" in inspect.signature(engine.build_optimizer).parameters:
        return engine.build_optimizer(model, "adamw", 1e-3, 0.9, 0.05, fused=True)
    opt = engine.build_optimizer(model, "adamw", 1e-3, 0.9, 0.05)
    return torch.optim.AdamW([{**g, "fused": True} for g in opt.param_groups], fused=True)


def _batches(n: int, size: int) -> list:
    g = torch.Generator().manual_seed(0)
    targets = torch.tensor([[[0, 5.0, 5, 30, 30], [1, 20, 20, 60, 50]], [[2, 10, 10, 40, 40], [-1, -1, -1, -1, -1]]])
    return [(torch.randint(0, 255, (2, 3, size, size), dtype=torch.uint8, generator=g), targets,
             torch.tensor([0, 1]), torch.tensor([[size, size]] * 2)) for _ in range(n)]


def count(device: torch.device, amp: str | None, steps: int) -> dict:
    """Syncs per step: {"ops": {op: count per step}, "total": per step, "cuda_debug": per step or None}."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(4, "cspdarknet", 16, "n")).to(device)
    opt = _optimizer(model)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    ema = engine.ModelEMA(model, 0.99)
    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(amp or "")
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    batches = _batches(steps + 1, 64)

    def run(part):
        engine.train_one_epoch(model, part, opt, sched, ema, device, scaler, 10.0, "steps", amp_dtype=dtype)
    run(batches[:1])  # warm-up: first-call allocations and lazy state
    with _counter_class()() as counter:
        run(batches[1:])
    cuda_debug = None
    if device.type == "cuda":
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                run(batches[1:])
            finally:
                torch.cuda.set_sync_debug_mode("default")
        cuda_debug = sum("synchronizing" in str(w.message).lower() for w in caught) / steps
    return {"ops": {k: v / steps for k, v in counter.ops.items()}, "total": counter.total / steps,
            "cuda_debug": cuda_debug}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", choices=["float16", "bfloat16"], help="autocast dtype (float16 adds the GradScaler)")
    p.add_argument("--steps", type=int, default=4)
    args = p.parse_args()
    r = count(torch.device(args.device), args.amp, args.steps)
    ops = ", ".join(f"{k} {v:g}" for k, v in sorted(r["ops"].items())) or "none"
    print(f"host syncs per step: {r['total']:g} ({ops}) [{engine.__file__}, {args.device}, amp {args.amp}]")
    if r["cuda_debug"] is not None:
        print(f"cuda sync debug mode: {r['cuda_debug']:g} per step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

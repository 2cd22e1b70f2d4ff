"""Training throughput on a crowded CPU: detpipe vs Ultralytics YOLOv8n, quiet and beside one busy process.

    /tmp/yolo-venv/bin/python bench/bench_contention.py [--steps 12] [--batch 8] [--imgsz 320] [--rounds 2]

Each measurement is a fresh child process that builds its model, takes 2 warm-up steps and times
--steps training steps (forward, loss, backward, optimizer) on one synthetic batch of 0-255 images
with 4 boxes each, reporting images/s. The same child runs "quiet" and "busy", where busy means
one other process spinning on the CPU (`while True: pass`, nice 0) for the whole measurement, as
another user's job would. Rows:

- detpipe with its default threads (`train.threads: 0`: detpipe.cpus.training_threads(), the
  usable CPUs less those other processes keep busy as a phase starts — the child picks it, so
  "busy" sees the busy process as a training phase would),
- detpipe with 1 thread,
- Ultralytics YOLOv8n (built from yolov8n.yaml, its v8DetectionLoss, SGD) with the threads its
  CPU trainer sets (`ultralytics.utils.NUM_THREADS` = cpu_count - 1, at least 1),
- Ultralytics with detpipe's default thread count.

The table prints images/s quiet and busy, busy/quiet (how much of its speed each keeps), and
detpipe / Ultralytics at each load. Rounds alternate the order of the rows so drift hits all alike;
the median over rounds is printed. Ultralytics is AGPL and no detpipe dependency: run this from a
bench venv that has it (see bench/compare_ultralytics.py). Run on an otherwise quiet machine.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLASSES = 4


def detpipe_step(batch: int, imgsz: int):
    from dataclasses import replace

    import torch

    from detpipe.model.detector import build_model
    from detpipe.model.load import model_config
    from detpipe.params import Params
    from detpipe.train import accel
    from detpipe.train.engine import build_optimizer, train_step
    from detpipe.train.loss import LossWeights

    params = Params()  # the default recipe and model (params.yaml equals the code defaults)
    train, device = params.train, torch.device("cpu")
    model = build_model(replace(model_config(params), num_classes=CLASSES)).train()
    dtype = accel.amp_dtype(train, device)
    opt = build_optimizer(model, train.optimizer, params.lr, train.momentum, train.weight_decay)
    scaler, weights = accel.grad_scaler(train, device), LossWeights.from_train_params(train)
    images, boxes, labels = synthetic(batch, imgsz, CLASSES)
    targets = torch.cat([labels[..., None].float(), boxes], dim=-1)  # [B, G, 5] (label, x1, y1, x2, y2)
    return lambda: train_step(model, images, targets, opt, scaler, train.grad_clip, weights, dtype)


def ultralytics_step(batch: int, imgsz: int):
    import torch
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel("yolov8n.yaml", nc=CLASSES, verbose=False).train()
    model.args = get_cfg()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.937, nesterov=True)
    images, boxes, labels = synthetic(batch, imgsz, CLASSES)
    xywh = torch.cat([(boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]], -1) / imgsz
    data = {"img": images.float() / 255, "batch_idx": torch.arange(batch).repeat_interleave(boxes.shape[1]).float(),
            "cls": labels.reshape(-1, 1).float(), "bboxes": xywh.reshape(-1, 4)}

    def step():
        loss, _ = model.loss(data)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
    return step


def synthetic(batch: int, imgsz: int, classes: int):
    """Seeded batch: uint8-valued images [B, 3, S, S] (float), boxes [B, 4, 4] xyxy pixels, labels [B, 4]."""
    import torch
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, imgsz, imgsz), generator=g).float()
    xy = torch.rand(batch, 4, 2, generator=g) * imgsz * 0.7
    wh = (0.1 + torch.rand(batch, 4, 2, generator=g) * 0.2) * imgsz
    return images, torch.cat([xy, xy + wh], -1), torch.randint(0, classes, (batch, 4), generator=g)


def child(tool: str, threads: int, steps: int, batch: int, imgsz: int) -> None:
    import torch
    if threads == 0:  # what a training phase with train.threads: 0 picks
        from detpipe.cpus import training_threads
        threads = training_threads()[0]
    torch.set_num_threads(threads)
    step = (detpipe_step if tool == "detpipe" else ultralytics_step)(batch, imgsz)
    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    print(json.dumps({"images_per_s": steps * batch / (time.perf_counter() - start),
                      "threads": torch.get_num_threads()}))


def measure(tool: str, threads: int, busy: bool, args) -> tuple[float, int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False"}
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        out = subprocess.run([sys.executable, __file__, "--child", tool, "--threads", str(threads),
                              "--steps", str(args.steps), "--batch", str(args.batch), "--imgsz", str(args.imgsz)],
                             env=env, capture_output=True, text=True, check=False)
    finally:
        if spinner:
            spinner.kill()
            spinner.wait()
    if out.returncode:
        raise SystemExit(f"{tool} child failed:\n{out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["images_per_s"], result["threads"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--child", choices=["detpipe", "ultralytics"])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    if args.child:
        child(args.child, args.threads, args.steps, args.batch, args.imgsz)
        return 0

    sys.path.insert(0, str(ROOT))
    from detpipe.cpus import usable_cpus
    from ultralytics.utils import NUM_THREADS
    ours = usable_cpus()
    rows = [("detpipe", 0, "detpipe (default threads)"), ("detpipe", 1, "detpipe (1 thread)"),
            ("ultralytics", NUM_THREADS, "ultralytics (its CPU default)"),
            ("ultralytics", ours, f"ultralytics ({ours} threads)")]
    rates: dict[tuple[str, bool], list[float]] = {}
    used: dict[tuple[str, bool], set[int]] = {}
    for r in range(args.rounds):
        for tool, threads, name in (rows if r % 2 == 0 else rows[::-1]):
            for busy in ((False, True) if r % 2 == 0 else (True, False)):
                rate, n = measure(tool, threads, busy, args)
                rates.setdefault((name, busy), []).append(rate)
                used.setdefault((name, busy), set()).add(n)
                print(f"round {r + 1}: {name:32s} {'busy ' if busy else 'quiet'} "
                      f"{rates[(name, busy)][-1]:6.1f} images/s", flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"\nbatch {args.batch}, imgsz {args.imgsz}, {args.steps} steps, median of {args.rounds} rounds; "
          f"usable CPUs {ours}, ultralytics NUM_THREADS {NUM_THREADS}")
    print(f"{'':34s}{'threads quiet/busy':>19s}{'quiet img/s':>13s}{'busy img/s':>12s}{'busy/quiet':>12s}")
    for _, _, name in rows:
        q, b = med[(name, False)], med[(name, True)]
        n = "/".join(",".join(map(str, sorted(used[(name, busy)]))) for busy in (False, True))
        print(f"{name:34s}{n:>19s}{q:13.1f}{b:12.1f}{b / q:12.2f}")
    ref = rows[2][2]
    for name in (rows[0][2], rows[1][2]):
        print(f"{name} / {ref}: quiet {med[(name, False)] / med[(ref, False)]:.2f}x, "
              f"busy {med[(name, True)] / med[(ref, True)]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

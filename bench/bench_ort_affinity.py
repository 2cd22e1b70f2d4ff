"""onnxruntime's forward pass with its worker threads pinned or not, spinning or not: the params.yaml
model (untrained) exported as detpipe's inference cache exports it, batch 1 and 8, runs `--gap`
seconds apart (0 and 0.02 by default: a stream of frames leaves its threads asleep between them).

    python bench/bench_ort_affinity.py [--threads 2] [--repeats 3] [--runs 40] [--imgsz 320]

Settings (detpipe's default: pinned + spin):
  pinned         workers pinned one per CPU, the caller off their CPUs during a run
                 (detpipe.cpus.thread_placement), spinning within a run
  floating       not pinned, spinning within a run
  pinned-nospin  pinned, no spinning
  floating-nospin  neither (onnxruntime's defaults but for spinning, as detpipe ran before)
Each line: repeat, gap, batch and each setting's median forward ms per image. The settings take
turns within a repeat; run it alone (`/work/bin/quiet`).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_predict import untrained_model  # noqa: E402
from detpipe.infer.backends import OnnxBackend  # noqa: E402
from detpipe.infer.onnx_cache import export_graph  # noqa: E402

SETTINGS = {"pinned": (True, True), "floating": (True, False), "pinned-nospin": (False, True),
            "floating-nospin": (False, False)}


def timed(backend: OnnxBackend, x: torch.Tensor, runs: int, gap: float) -> float:
    """Median ms per image of `runs` forward passes, each `gap` seconds after the last."""
    for _ in range(3):
        backend(x)
    out = []
    for _ in range(runs):
        time.sleep(gap)
        t0 = time.perf_counter()
        backend(x)
        out.append(1000 * (time.perf_counter() - t0) / len(x))
    return float(np.median(out))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--runs", type=int, default=40, help="timed forward passes per setting and repeat")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--gaps", default="0,0.02", help="seconds between runs, comma-separated")
    p.add_argument("--params", default=str(Path(__file__).resolve().parents[1] / "params.yaml"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, params = untrained_model(Path(args.params))
    print(f"onnxruntime, {args.threads} threads, imgsz {args.imgsz}, params.yaml model; median forward ms per image")
    print(f"{'repeat':>6} {'gap':>5} {'batch':>5} " + " ".join(f"{name:>15}" for name in SETTINGS))
    with tempfile.TemporaryDirectory() as tmp:
        path = export_graph(model, list(params.data.classes), args.imgsz, Path(tmp) / "model.onnx")
        backends = {name: OnnxBackend(path, torch.device("cpu"), spin=spin, pin=pin)
                    for name, (spin, pin) in SETTINGS.items()}
        for repeat in range(args.repeats):
            for gap in (float(g) for g in args.gaps.split(",")):
                for batch in (1, 8):
                    x = torch.randint(0, 256, (batch, 3, args.imgsz, args.imgsz), dtype=torch.uint8)
                    ms = {name: timed(b, x, max(5, args.runs // batch), gap) for name, b in backends.items()}
                    print(f"{repeat:>6} {gap:>5} {batch:>5} " + " ".join(f"{v:>15.2f}" for v in ms.values()),
                          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

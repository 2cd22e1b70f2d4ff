"""What onnxruntime runs per inference in the exported graph, before and after #18 folded the input
normalisation into the first conv and made the shapes constants at a fixed size.

    /work/bin/heavy python bench/bench_graph_ops.py [--params params.yaml] [--imgsz 320] [--runs 200]

Both graphs are the params.yaml model with untrained weights (bench_predict.untrained_model), exported
with any batch as the inference cache exports it; "before" wraps the network as the export did before
#18 (RawOutputs). Sessions have 2 threads that spin within a run only (force_spinning_stop, as
OnnxBackend's: else one graph's idle threads spin through the other's run) and the two graphs take turns
run by run, so that a change in the machine's load hits both. First onnxruntime's profile of `runs` runs at
batch 1: kernel time summed by op type (ms per run), model_run's median; then plain session.run at batch
1 and 8 (no profiling), median ms of `runs` each.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from unittest import mock

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_infer_paths import RawOutputs  # noqa: E402
from bench.bench_predict import untrained_model  # noqa: E402
from detpipe.infer import onnx_graph  # noqa: E402

THREADS, WARMUP = 2, 20


def session(path: Path, profile_prefix: str | None = None):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    options.add_session_config_entry("session.force_spinning_stop", "1")
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def alternate(sessions: dict, images: np.ndarray, runs: int) -> dict[str, float]:
    """Median ms of session.run per session, the sessions taking turns run by run after a warm-up."""
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for i in range(WARMUP + runs):
        for name, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, {"images": images})
            if i >= WARMUP:
                times[name].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def kernel_ms(profile: Path, runs: int) -> tuple[dict[str, float], float]:
    """(kernel ms per run by op type, median model_run ms) over the last `runs` runs of a profile."""
    events = json.loads(profile.read_text())
    timed = sorted((e for e in events if e["name"] == "model_run"), key=lambda e: e["ts"])[-runs:]
    by_op: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= timed[0]["ts"]:
            by_op[e["args"]["op_name"]] += e["dur"] / 1e3 / runs
    return dict(by_op), statistics.median(e["dur"] / 1e3 for e in timed)


def random_images(batch: int, size: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (batch, 3, size, size)).astype(np.float32)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--runs", type=int, default=200)
    args = p.parse_args()
    model, params = untrained_model(Path(args.params))
    names = list(params.data.classes)
    with tempfile.TemporaryDirectory(prefix="bench-graph-ops-") as tmp:
        paths = {"before": Path(tmp) / "before.onnx", "after": Path(tmp) / "after.onnx"}
        with mock.patch.object(onnx_graph, "ExportNetwork", lambda m, size, fixed_size: RawOutputs(m)):
            onnx_graph.export_model(model, names, args.imgsz, paths["before"], dynamic="batch")
        onnx_graph.export_model(model, names, args.imgsz, paths["after"], dynamic="batch")
        profiled = {k: session(path, str(Path(tmp) / k)) for k, path in paths.items()}
        alternate(profiled, random_images(1, args.imgsz), args.runs)
        profiles = {k: kernel_ms(Path(s.end_profiling()), args.runs) for k, s in profiled.items()}
        print(f"onnxruntime profile, batch 1, imgsz {args.imgsz}, {THREADS} threads, {args.runs} runs: "
              "kernel ms per run by op type, before -> after")
        before, after = profiles["before"][0], profiles["after"][0]
        for op in sorted(set(before) | set(after), key=lambda o: -max(before.get(o, 0), after.get(o, 0))):
            print(f"  {op:<18} {before.get(op, 0):7.3f} -> {after.get(op, 0):7.3f}")
        print(f"  {'all kernels':<18} {sum(before.values()):7.3f} -> {sum(after.values()):7.3f}")
        print(f"  {'model_run median':<18} {profiles['before'][1]:7.3f} -> {profiles['after'][1]:7.3f}")
        plain = {k: session(path) for k, path in paths.items()}
        for batch in (1, 8):
            t = alternate(plain, random_images(batch, args.imgsz), args.runs)
            print(f"session.run batch {batch}: median ms {t['before']:.3f} -> {t['after']:.3f} "
                  f"({t['after'] / t['before'] - 1:+.1%}), {args.runs} runs each, no profiling")


if __name__ == "__main__":
    main()

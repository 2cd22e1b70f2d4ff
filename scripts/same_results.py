"""Do two checkouts of detpipe train bitwise the same weights and compute the same metrics?

    python scripts/same_results.py CHECKOUT_A CHECKOUT_B [--work DIR]

For each checkout: a tiny repo of its files (scripts/tiny_repo.py: the same generated dataset and the same
tiny params for both), `dvc repro`, then the sha256 of every tensor of
models/best.pt, the values of reports/map/metrics.json and the sha256 of the detections CSV.
Prints both and exits 1 when they differ.
A refactoring that claims "no behaviour change" runs this against the commit it started from.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts import rerun_matrix  # noqa: E402
from scripts.tiny_repo import make_tiny_repo  # noqa: E402


def run_checkout(checkout: Path, dest: Path) -> dict:
    """Build the tiny repo from `checkout`'s files, `dvc repro` it, return its weights and metrics."""
    repo = make_tiny_repo(dest, checkout)
    rerun_matrix.sh(["dvc", "repro"], repo)
    state = torch.load(repo / "models/best.pt", map_location="cpu", weights_only=True)
    tensors = {f"{part}.{k}": hashlib.sha256(v.contiguous().numpy().tobytes()).hexdigest()
               for part in ("model", "ema") if state.get(part) for k, v in state[part].items()}
    digest = hashlib.sha256(json.dumps(tensors, sort_keys=True).encode()).hexdigest()
    metrics = json.loads((repo / "reports/map/metrics.json").read_text(encoding="utf-8"))
    # Every box of the test split, so equal metrics are not only equal zeros of an untrained model.
    detections = hashlib.sha256((repo / "data/detections/test.csv").read_bytes()).hexdigest()
    return {"tensors": tensors, "weights_digest": digest, "metrics": metrics, "detections": detections}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--work", type=Path, default=None, help="where the tiny repos go (default: a temp folder)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="same-results-"))
    results = [run_checkout(c.resolve(), work / name) for c, name in ((args.a, "a"), (args.b, "b"))]
    for checkout, r in zip((args.a, args.b), results):
        print(f"{checkout}: {len(r['tensors'])} tensors, weights sha256 {r['weights_digest']}, "
              f"detections CSV sha256 {r['detections']}, metrics.json {json.dumps(r['metrics'], sort_keys=True)}")
    differ = [k for k in sorted(set(results[0]["tensors"]) | set(results[1]["tensors"]))
              if results[0]["tensors"].get(k) != results[1]["tensors"].get(k)]
    same_metrics = results[0]["metrics"] == results[1]["metrics"]
    same_boxes = results[0]["detections"] == results[1]["detections"]
    print(f"tensors that differ: {len(differ)} {differ[:5]}; metrics.json values equal: {same_metrics}; "
          f"detections CSV equal: {same_boxes}")
    return 0 if not differ and same_metrics and same_boxes else 1


if __name__ == "__main__":
    sys.exit(main())

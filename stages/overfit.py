"""Stage overfit: is the model overfitting? Verdict, evidence and advice from the training history.

Reads both phase TSVs and the split report; writes the Markdown report, its figure and a JSON
with the verdict, best epoch and gap figures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detpipe.reports.overfit.checks import judge, load_history, render_markdown  # noqa: E402
from detpipe.pipeline.view import load_stage_params  # noqa: E402
from detpipe.reports.plots_train import plot_training_curves  # noqa: E402

# The verdict reads the thresholds; the advice names the recipe's current values.
PARAMS = ("lr", "overfit", "split", "train", "model")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", required=True, help="params.yaml")
    ap.add_argument("--frozen", required=True, help="frozen-phase history TSV")
    ap.add_argument("--unfrozen", required=True, help="unfrozen-phase history TSV")
    ap.add_argument("--split-report", required=True, help="split stage's JSON (distributions per split)")
    ap.add_argument("--out-md", required=True)
    ap.add_argument("--out-json", required=True)
    ap.add_argument("--out-png", required=True)
    return ap.parse_args(argv)


def read_json(path: str) -> dict | None:
    """The split report, or None when it is missing or unreadable (the verdict then uses losses only)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"overfit: split report not used ({exc})", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    start = time.perf_counter()
    args = parse_args(argv)
    params = load_stage_params(args.params, PARAMS, "overfit")
    history = load_history(args.frozen, args.unfrozen)
    verdict = judge(history, params, read_json(args.split_report))

    png = Path(args.out_png)
    plot_training_curves(history, png, verdict.best_epoch, params.overfit.gap_ratio,
                         title=f"Training curves — verdict: {verdict.verdict}")
    md = Path(args.out_md)
    md.parent.mkdir(parents=True, exist_ok=True)
    # The figure link is relative to the Markdown file so it works on GitHub and offline.
    rel_png = Path(os.path.relpath(png.resolve(), md.resolve().parent)).as_posix()
    md.write_text(render_markdown(verdict, history, rel_png), encoding="utf-8")

    report = verdict.to_json()
    report["seconds"] = round(time.perf_counter() - start, 3)
    out = Path(args.out_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"overfit: {verdict.verdict} — {verdict.reason} (best epoch {verdict.best_epoch})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

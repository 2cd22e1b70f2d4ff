"""Stage overfit: is the model overfitting? Verdict, evidence and advice from the training history.

Reads both phase TSVs, the split report, the test split's metrics (AP by object size, for
the advice) and the settings training resolved (reports/train/recipe.json: the input size and
epoch counts the advice quotes are the ones the run used, not `auto`); writes the Markdown report, its figure and a JSON
with the verdict, best epoch and gap figures.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detpipe.artifacts.error import ArtifactError  # noqa: E402
from detpipe.artifacts.metrics import MapMetrics  # noqa: E402
from detpipe.artifacts.split_report import SplitReport  # noqa: E402
from detpipe.artifacts.train_recipe import TrainRecipe  # noqa: E402
from detpipe.reports.overfit.history import load_history  # noqa: E402
from detpipe.reports.overfit.render import render_markdown  # noqa: E402
from detpipe.reports.overfit.verdict import judge  # noqa: E402
from detpipe.pipeline.view import load_stage_params  # noqa: E402
from detpipe import recipe  # noqa: E402
from detpipe.reports.plots_train import plot_training_curves  # noqa: E402

# The verdict reads the thresholds; the advice names the recipe's current values.
PARAMS = ("lr", "overfit", "split", "train", "model")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", required=True, help="params.yaml")
    ap.add_argument("--frozen", required=True, help="frozen-phase history TSV")
    ap.add_argument("--unfrozen", required=True, help="unfrozen-phase history TSV")
    ap.add_argument("--split-report", required=True, help="split stage's JSON (distributions per split)")
    ap.add_argument("--map-metrics", required=True,
                    help="map stage's metrics.json (AP and misses by object size, for the advice)")
    ap.add_argument("--recipe", required=True, help="train_unfrozen's JSON of the settings it resolved and why")
    ap.add_argument("--out-md", required=True)
    ap.add_argument("--out-json", required=True)
    ap.add_argument("--out-png", required=True)
    return ap.parse_args(argv)


def read_split_report(path: str) -> SplitReport | None:
    """The split report; None when there is none (run outside the pipeline: the verdict then uses
    the losses only). A file of another layout is an ArtifactError."""
    if not Path(path).is_file():
        print(f"overfit: warning: no split report {path}; the verdict uses the losses only", file=sys.stderr)
        return None
    return SplitReport.read(path)


def read_map_metrics(path: str) -> MapMetrics | None:
    """The test split's metrics; None when there are none yet (the advice then leaves out the
    object-size levers). A file of another layout is an ArtifactError."""
    if not Path(path).is_file():
        print(f"overfit: warning: no map metrics {path}; the advice leaves out object sizes", file=sys.stderr)
        return None
    return MapMetrics.read(path)


def read_recipe(path: str, params) -> tuple[recipe.Choice, ...]:
    """The choices training made; without the file (run outside the pipeline) the ones params.yaml
    alone decides, and `auto` sizes stay unresolved (the advice then quotes no pixel sizes)."""
    if not Path(path).is_file():
        print(f"overfit: warning: no training recipe {path}; `auto` settings stay unresolved", file=sys.stderr)
        return (recipe.freeze_epochs(params),)
    return tuple(TrainRecipe.read(path).choices)


def main(argv: list[str] | None = None) -> int:
    start = time.perf_counter()
    args = parse_args(argv)
    params = load_stage_params(args.params, PARAMS, "overfit")
    history = load_history(args.frozen, args.unfrozen)
    try:
        split_report = read_split_report(args.split_report)
        metrics = read_map_metrics(args.map_metrics)
        choices = read_recipe(args.recipe, params)
    except ArtifactError as exc:
        print(f"overfit: error: {exc}", file=sys.stderr)
        return 1
    params = recipe.resolve(params, choices)  # what the run trained with, and why (printed in the report)
    verdict = judge(history, params, split_report, metrics)

    png = Path(args.out_png)
    plot_training_curves(history, png, verdict.best_epoch, params.overfit.gap_ratio,
                         title=f"Training curves — verdict: {verdict.verdict}")
    md = Path(args.out_md)
    md.parent.mkdir(parents=True, exist_ok=True)
    # The figure link is relative to the Markdown file so it works on GitHub and offline.
    rel_png = Path(os.path.relpath(png.resolve(), md.resolve().parent)).as_posix()
    md.write_text(render_markdown(verdict, history, rel_png, [c.line() for c in choices]), encoding="utf-8")

    verdict.artifact().write(args.out_json)
    print(f"overfit: {verdict.verdict} — {verdict.reason} (best epoch {verdict.best_epoch}; "
          f"{time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

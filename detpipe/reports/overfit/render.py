"""reports/overfitting.md: the verdict first, then the figure, the figures, the advice, the checks."""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from detpipe.reports.overfit.verdict import Verdict


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def render_markdown(v: Verdict, history: pd.DataFrame, png_name: str | None, recipe: list[str] = ()) -> str:
    """reports/overfitting.md: verdict first, then the figure, the figures, the recipe's resolved
    settings (`recipe`: one line each), advice, the checks."""
    last = history.iloc[-1] if len(history) else None
    lines = ["# Overfitting report", "", f"**Verdict: {v.verdict}** — {v.reason}.", ""]
    if png_name:
        lines += [f"![Training curves: loss, val mAP50 and gap per epoch]({png_name})", ""]
    rows = [
        ("epochs (frozen + unfrozen)", f"{v.epochs}" + (f" (boundary after epoch {int(v.phase_boundary)})" if v.phase_boundary else "")),
        ("best epoch (val mAP50)", _fmt(v.best_epoch)),
        ("best val mAP50", _fmt(v.best_val_map50)),
        ("final train loss", _fmt(None if last is None else float(last["train_loss"]))),
        ("final val loss", _fmt(None if last is None else float(last["val_loss"]))),
        ("final gap val − train", _fmt(v.gap["final"])),
        ("final relative gap (val − train) / train", _fmt(v.gap["final_relative"])),
        (f"relative gap change over last {v.gap['last_k']} epochs", _fmt(v.gap["change_relative_last_k"])),
        (f"median train object, √(w·h), letterboxed to imgsz {_fmt(v.input_scale.imgsz)} (small objects)",
         f"{_fmt(v.input_scale.median_px)} px ({_fmt(v.input_scale.median_small_px)} px)"),
    ]
    lines += ["| figure | value |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows] + [""]
    if recipe:
        lines += ["## Recipe", ""] + [f"- {line}" for line in recipe] + [""]
    lines += ["## Advice", ""] + [f"- {a}" for a in v.advice] + [""]
    if v.levers:
        lines += ["## What limits the model", "", "| lever | evidence |", "|---|---|"]
        lines += [f"| `{lv.key}` | {', '.join(f'{k} = {_fmt(x)}' for k, x in lv.evidence.items())} |" for lv in v.levers]
        lines += [""]
    lines += ["## Checks", "", "| check | fired | why |", "|---|---|---|"]
    lines += [f"| {f.name} | {'yes' if f.fired else 'no'} | {f.reason} |" for f in v.findings]
    lines += ["", "## Evidence", ""]
    for f in v.findings:
        ev = ", ".join(f"{k} = {_fmt(x)}" for k, x in f.evidence.items())
        lines.append(f"- **{f.name}**: {ev or '–'}")
    lines += ["", "Train loss is averaged over each epoch under augmentation; val loss is measured "
              "after the epoch without it, so val slightly below train is normal.", ""]
    return "\n".join(lines)

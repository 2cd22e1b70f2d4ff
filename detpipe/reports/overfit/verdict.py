"""Is my model overfitting? The verdict: the first check that fires, with its evidence and advice.

Everything here is a pure function of the training history, the split report and the params, so
tests can feed synthetic histories for every verdict. The checks (checks.py), in this order:

- overfitting: val loss has risen for >= `patience` epochs since its minimum while train loss
  kept falling, or the relative gap (val - train) / train exceeds `gap_ratio` and grew over
  the last `patience` epochs.
- data mismatch: val loss far below train loss (train / val >= `mismatch_ratio` over the last
  epochs), or far above it in every epoch from the first, or the split report shows val's class
  or box-size mix differing from train's (total-variation distance > `split.max_shift`, the split
  stage's own flag), or its objects per image by more than `mismatch_ratio` times.
- not converged: val loss still falling by >= `min_improvement` (relative) per epoch, or val
  mAP50 still rising by >= `min_improvement` per epoch, over the last `patience` epochs; or too
  few epochs to judge.
- underfitting: val has stopped improving but best val mAP50 < `low_map`, or train loss fell by
  less than `min_loss_drop` of its first value.
- still improving: none of the above, but the best val mAP50 epoch is among the last `patience`.
- good fit: none of the above.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from detpipe import recipe
from detpipe.artifacts.metrics import MapMetrics
from detpipe.artifacts.overfit_verdict import OverfitVerdict
from detpipe.artifacts.split_report import SplitReport
from detpipe.params import Params
from detpipe.reports.overfit.advice import advise
from detpipe.reports.overfit.checks import (Finding, check_mismatch, check_not_converged, check_overfitting,
                                            check_underfitting, split_shift)
from detpipe.reports.overfit.history import best_epoch, final_figures, gap_figures, phase_boundary
from detpipe.reports.overfit.levers import InputScale, Lever, find_levers, input_scale


@dataclass
class Verdict:
    verdict: str
    reason: str
    best_epoch: int | None
    best_val_map50: float | None
    gap: dict[str, Any]
    findings: list[Finding]
    advice: list[str]
    epochs: int
    phase_boundary: float | None
    final: dict[str, Any] = field(default_factory=dict)
    levers: list[Lever] = field(default_factory=list)
    input_scale: InputScale = InputScale(imgsz=None, median_px=None, median_small_px=None)

    def to_json(self) -> dict[str, Any]:
        """The overfitting.json payload (without the stage's "seconds").

        It is a DVC metrics file, and `dvc metrics show` / `dvc exp show` make a column of every
        number, string and bool in it but skip lists: so the headline figures are scalars, and
        the sentences (reason, every check, advice) are lists.
        """
        fired = next((f for f in self.findings if f.name == self.verdict), None)
        return _clean({
            "verdict": self.verdict,
            "epochs": self.epochs,
            "best_epoch": self.best_epoch,
            "best_val_map50": self.best_val_map50,
            "final": self.final,
            "gap": self.gap,
            "evidence": fired.evidence if fired else {},
            "reason": [self.reason],
            "also_noted": [f.name for f in self.findings if f.fired and f.name != self.verdict],
            "checks": [{"check": f.name, "fired": f.fired, "reason": f.reason, "evidence": f.evidence}
                       for f in self.findings],
            "advice": self.advice,
            "levers": [lv.model_dump() for lv in self.levers],
            "input_scale": self.input_scale.model_dump(),
        })

    def artifact(self) -> OverfitVerdict:
        """reports/overfitting.json's content. No wall time: the report stage reads this file, and an
        unchanged verdict must not rerun it (the stage prints its time instead)."""
        return OverfitVerdict.model_validate(self.to_json())


def _clean(obj: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN/inf to None, floats rounded for reading."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return None if not math.isfinite(v) else round(v, 6)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def judge(history: pd.DataFrame, params: Params, split_report: SplitReport | None = None,
          metrics: MapMetrics | None = None) -> Verdict:
    """The verdict, its evidence and advice, and the levers the evidence points at (with the map
    stage's `metrics`, the small-object ones). Pure: no files read or written."""
    params = recipe.resolve(params, (recipe.freeze_epochs(params),))  # the advice names the epochs trained
    p = params.overfit
    shift = split_shift(split_report)
    best, best_map = best_epoch(history)
    findings = [
        check_overfitting(history, p),
        check_mismatch(history, shift, p, params.split.max_shift),
    ]
    findings.append(check_not_converged(history, p))
    findings.append(check_underfitting(history, best_map, p, improving=findings[-1].fired))
    first = next((f for f in findings if f.fired), None)
    gap = gap_figures(history, p.patience)
    if first is None:
        g = gap["final_relative"]
        gap_text = f"the gap ({'n/a' if g is None else f'{g:.0%}'}) stays under {p.gap_ratio:.0%}"
        # Levelled off by the trend tests, yet the best epoch is one of the last: it has not peaked.
        if best is not None and best in set(history["epoch"].tail(p.patience).astype(int)):
            score = "" if best_map is None else f", val mAP50 {best_map:.3f}"
            reason = f"more epochs would help: the best epoch ({best}{score}) is among the last {p.patience}, and {gap_text}"
            findings.append(Finding("still improving", True, reason, {"best_epoch": best, "gap_relative": g,
                                                                      "best_val_map50": best_map}))
        else:
            reason = (f"val loss has levelled off near its minimum, {gap_text}"
                      + (f" and best val mAP50 is {best_map:.3f}" if best_map is not None else ""))
            findings.append(Finding("good fit", True, reason, {"gap_relative": g, "best_val_map50": best_map}))
        first = findings[-1]
    n_train = split_report.splits["train"].images if split_report else None
    levers = find_levers(history, params, split_report, metrics, overfitting=findings[0].fired)
    return Verdict(
        verdict=first.name, reason=first.reason, best_epoch=best, best_val_map50=best_map,
        gap=gap, findings=findings, advice=advise(first.name, history, params, n_train, best, levers),
        epochs=len(history), phase_boundary=phase_boundary(history), final=final_figures(history),
        levers=levers, input_scale=input_scale(params, split_report),
    )

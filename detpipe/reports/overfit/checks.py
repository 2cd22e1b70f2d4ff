"""The checks behind the overfitting verdict (verdict.py says their order and thresholds): each a
Finding, fired or not, with one sentence why and the figures behind it. Pure functions of the
history, the split report's comparison and the params."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from detpipe.artifacts.split_report import SplitReport
from detpipe.params import OverfitParams
from detpipe.reports.overfit.history import gap_figures, slope
# Below this many objects in a split, differences in mix are mostly noise: the split stage's rule.
from detpipe.reports.split_check import MIN_OBJECTS_TO_COMPARE


@dataclass
class Finding:
    """One check: whether it fired, why (one sentence) and the figures behind it."""

    name: str
    fired: bool
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)


def split_shift(report: SplitReport | None, a: str = "train", b: str = "val") -> dict[str, Any]:
    """How split b differs from split a: the split stage's own class-mix and size-mix distances
    (total variation: 0 = identical, 1 = disjoint) and the objects-per-image ratio."""
    if report is None:
        return {"class_tv_distance": None, "size_tv_distance": None, "objects_per_image_ratio": None,
                "val_objects": None, "train_objects": None}
    sa, sb, cmp = report.splits[a], report.splits[b], report.comparison[b]
    ratio = (sb.objects / sb.images) / (sa.objects / sa.images) if sa.images and sb.images and sa.objects else None
    return {"class_tv_distance": cmp.class_shift, "size_tv_distance": cmp.size_shift,
            "objects_per_image_ratio": ratio, "val_objects": sb.objects, "train_objects": sa.objects}


def _losses(history: pd.DataFrame) -> pd.DataFrame:
    return history.dropna(subset=["train_loss", "val_loss"]).reset_index(drop=True)


def check_overfitting(history: pd.DataFrame, p: OverfitParams) -> Finding:
    """Val loss rising while train loss falls for `patience` epochs, or a large growing gap."""
    rows, k = _losses(history), p.patience
    if len(rows) < k + 1:
        return Finding("overfitting", False, f"only {len(rows)} epochs with both losses; need {k + 1}")
    val, train = rows["val_loss"].to_numpy(), rows["train_loss"].to_numpy()
    lowest = int(np.argmin(val))
    # The rise starts after the last epoch still within min_improvement of the minimum, so a
    # long flat bottom followed by a short rise is not mistaken for a long rise.
    near = np.flatnonzero(val <= val[lowest] + p.min_improvement * max(abs(val[lowest]), 1e-12))
    i = int(near.max())
    since = len(val) - 1 - i
    val_rise = (val[-1] - val[lowest]) / max(abs(val[lowest]), 1e-12)
    train_fall = (train[i] - train[-1]) / max(abs(train[i]), 1e-12)
    gap = gap_figures(history, k)
    ev = {"val_loss_min_epoch": int(rows["epoch"][lowest]), "epochs_rising": since,
          "val_loss_rise_since_min": val_rise, "train_loss_fall_while_rising": train_fall,
          "gap_relative": gap["final_relative"], "gap_change_last_k": gap["change_relative_last_k"],
          "gap_ratio_threshold": p.gap_ratio, "patience": k}
    rising = since >= k and val_rise > p.min_improvement and train_fall > 0
    growing = (gap["final_relative"] > p.gap_ratio
               and (gap["change_relative_last_k"] or 0.0) > p.min_improvement)
    if rising:
        reason = (f"val loss has risen for {since} epochs, {val_rise:.1%} above its minimum at "
                  f"epoch {ev['val_loss_min_epoch']}, while train loss fell {train_fall:.1%}")
    elif growing:
        reason = (f"val loss is {gap['final_relative']:.0%} above train loss (threshold "
                  f"{p.gap_ratio:.0%}) and the gap grew by {gap['change_relative_last_k']:.2f} "
                  f"over the last {k} epochs")
    else:
        reason = (f"val loss {'has not risen' if since < k else 'is flat'} for {k} epochs after its minimum "
                  f"and the gap ({gap['final_relative']:.0%}) is not growing past {p.gap_ratio:.0%}")
    return Finding("overfitting", rising or growing, reason, ev)


def check_mismatch(history: pd.DataFrame, shift: dict[str, Any], p: OverfitParams,
                   max_shift: float) -> Finding:
    """Val much easier or harder than train: from the losses and from the split distributions.

    `max_shift` is split.max_shift, so the verdict agrees with the split stage's own flag."""
    rows, r = _losses(history), p.mismatch_ratio
    ev: dict[str, Any] = {"mismatch_ratio": r, "max_shift": max_shift, **shift}
    reasons = []
    if len(rows):
        tail = rows.tail(p.patience + 1)
        easy = float(np.median(tail["train_loss"] / tail["val_loss"].clip(lower=1e-12)))
        # Overfitting opens the gap late; a val set that is harder keeps it open from epoch 1.
        hard = float((rows["val_loss"] / rows["train_loss"].clip(lower=1e-12)).min())
        ev.update(train_over_val_loss_recent=easy, val_over_train_loss_min=hard)
        if easy >= r:
            reasons.append(f"val loss is {easy:.1f}x below train loss over the last epochs (val easier)")
        if hard >= r:
            reasons.append(f"val loss stayed at least {hard:.1f}x train loss in every epoch (val harder)")
    counts = [n for n in (shift.get("val_objects"), shift.get("train_objects")) if n is not None]
    enough = not counts or min(counts) >= MIN_OBJECTS_TO_COMPARE
    ev["enough_objects_to_compare"] = enough
    for key, what in (("class_tv_distance", "class mix"), ("size_tv_distance", "box-size mix")):
        tv = shift.get(key)
        if enough and tv is not None and tv > max_shift:
            reasons.append(f"val's {what} differs from train's (total-variation distance {tv:.2f} > {max_shift:g})")
    v = shift.get("objects_per_image_ratio")
    if enough and v is not None and v > 0 and max(v, 1 / v) >= r:
        reasons.append(f"val's objects per image is {v:.2f}x train's")
    if not reasons:
        return Finding("data mismatch", False, "val and train look alike in losses and split distributions", ev)
    return Finding("data mismatch", True, "; ".join(reasons), ev)


def check_not_converged(history: pd.DataFrame, p: OverfitParams) -> Finding:
    """Still improving at the end (train longer), or too few epochs to tell."""
    k = p.patience
    if len(history) <= k:
        return Finding("not converged", True, f"only {len(history)} epochs recorded; the verdict "
                       f"needs more than patience={k} epochs", {"epochs": len(history), "patience": k})
    tail = history.tail(k + 1)
    val_trend = slope(tail["val_loss"].to_numpy())
    # Relative, as the loss: an absolute 0.01 per epoch called a model at mAP50 0.2 that gains 0.005
    # (2.5%) an epoch "stalled" while one at 0.9 needed a 1.1% gain to count as rising.
    map_trend = slope(tail["val_map50"].to_numpy())
    train_trend = slope(tail["train_loss"].to_numpy())
    ev = {"val_loss_trend_per_epoch": val_trend, "val_map50_trend_per_epoch": map_trend,
          "train_loss_trend_per_epoch": train_trend, "min_improvement": p.min_improvement,
          "last_k": k}
    falling = math.isfinite(val_trend) and val_trend <= -p.min_improvement
    rising = math.isfinite(map_trend) and map_trend >= p.min_improvement
    if falling or rising:
        parts = ([f"val loss still falls {-val_trend:.1%} per epoch"] if falling else []) + \
                ([f"val mAP50 still rises {map_trend:.1%} per epoch"] if rising else [])
        return Finding("not converged", True, " and ".join(parts) + f" over the last {k} epochs", ev)
    return Finding("not converged", False, f"val loss and mAP50 changed less than "
                   f"{p.min_improvement:.1%} of their level per epoch over the last {k} epochs", ev)


def check_underfitting(history: pd.DataFrame, best_map: float | None, p: OverfitParams,
                       improving: bool) -> Finding:
    """Plateaued (not `improving`) with a low score or a train loss that barely came down."""
    rows = history.dropna(subset=["train_loss"])
    if rows.empty:
        return Finding("underfitting", False, "no train loss recorded")
    if improving:
        return Finding("underfitting", False, "val is still improving, so it is too early to call "
                       "the model too weak (see not converged)")
    first, last = float(rows["train_loss"].iloc[0]), float(rows["train_loss"].iloc[-1])
    drop = 1 - last / first if first > 0 else 0.0
    ev = {"best_val_map50": best_map, "low_map_threshold": p.low_map,
          "train_loss_first": first, "train_loss_final": last, "train_loss_drop": drop,
          "min_loss_drop": p.min_loss_drop}
    reasons = []
    if best_map is not None and best_map < p.low_map:
        reasons.append(f"best val mAP50 is {best_map:.3f} (< {p.low_map})")
    if drop < p.min_loss_drop:
        reasons.append(f"train loss fell only {drop:.0%} from epoch 1 (< {p.min_loss_drop:.0%})")
    if reasons:
        return Finding("underfitting", True, " and ".join(reasons) + " while progress has stalled", ev)
    return Finding("underfitting", False, f"train loss fell {drop:.0%} and best val mAP50 is "
                   f"{best_map if best_map is None else round(best_map, 3)}", ev)

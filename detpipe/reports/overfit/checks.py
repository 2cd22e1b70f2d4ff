"""Is my model overfitting? A verdict with its evidence and advice, from the per-epoch history.

Everything here is a pure function of the training history (the two phase TSVs concatenated),
the split report and the params, so tests can feed synthetic histories for every verdict.

Verdicts, checked in this order (the first that fires wins; the others that fire are listed as
"also noted"):

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
- good fit: none of the above.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from detpipe.artifacts.overfit_verdict import OverfitVerdict
from detpipe.artifacts.split_report import SplitReport
from detpipe.catalog import SCALES, pan_width
from detpipe.params import OverfitParams, Params
# Below this many objects in a split, differences in mix are mostly noise: the split stage's rule.
from detpipe.reports.split_check import MIN_OBJECTS_TO_COMPARE

COLUMNS = ("epoch", "phase", "train_loss", "val_loss", "val_map50", "lr", "seconds")


@dataclass
class Finding:
    """One check: whether it fired, why (one sentence) and the figures behind it."""

    name: str
    fired: bool
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)


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
        })

    def artifact(self, seconds: float) -> OverfitVerdict:
        """reports/overfitting.json's content, with the stage's wall time."""
        return OverfitVerdict.model_validate({**self.to_json(), "seconds": round(seconds, 3)})


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


# --------------------------------------------------------------------------- history

def load_history(*paths: str | Path) -> pd.DataFrame:
    """Concatenate the phase TSVs (missing or empty files skipped), sorted by global epoch."""
    frames = []
    for path in paths:
        path = Path(path)
        if path.is_file() and path.stat().st_size > 0:
            frame = pd.read_csv(path, sep="\t")
            if len(frame):
                frames.append(frame)
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in COLUMNS})
    history = pd.concat(frames, ignore_index=True)
    for col in COLUMNS:
        if col not in history:
            history[col] = "unknown" if col == "phase" else np.nan
    numeric = [c for c in history.columns if c != "phase"]
    history[numeric] = history[numeric].apply(pd.to_numeric, errors="coerce")
    return history.sort_values("epoch", kind="stable").reset_index(drop=True)


def phase_boundary(history: pd.DataFrame) -> float | None:
    """Epoch position (x.5) just after the last frozen epoch, if both phases have epochs.

    Not the midpoint to the first unfrozen epoch: a frozen phase stopped early by train.patience
    leaves a gap in the global epoch numbers.
    """
    frozen = history.loc[history["phase"] == "frozen", "epoch"]
    unfrozen = history.loc[history["phase"] == "unfrozen", "epoch"]
    if frozen.empty or unfrozen.empty:
        return None
    return float(frozen.max()) + 0.5


def best_epoch(history: pd.DataFrame) -> tuple[int | None, float | None]:
    """Epoch of best val mAP50 (the one models/best.pt keeps), else of lowest val loss."""
    maps = history.dropna(subset=["val_map50"])
    if len(maps):
        row = maps.loc[maps["val_map50"].idxmax()]
        return int(row["epoch"]), float(row["val_map50"])
    losses = history.dropna(subset=["val_loss"])
    if len(losses):
        return int(losses.loc[losses["val_loss"].idxmin(), "epoch"]), None
    return None, None


def slope(values: np.ndarray, relative: bool = True) -> float:
    """Least-squares change per epoch; relative to the mean magnitude when `relative`."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return float("nan")
    s = float(np.polyfit(np.arange(len(values)), values, 1)[0])
    if not relative:
        return s
    scale = float(np.mean(np.abs(values)))
    return s / scale if scale > 0 else 0.0


def final_figures(history: pd.DataFrame) -> dict[str, Any]:
    """Last epoch's losses and mAP (what `dvc metrics show` lists as the final losses)."""
    if history.empty:
        return {"epoch": None, "train_loss": None, "val_loss": None, "val_map50": None}
    last = history.iloc[-1]
    return {"epoch": int(last["epoch"]), "train_loss": float(last["train_loss"]),
            "val_loss": float(last["val_loss"]), "val_map50": float(last["val_map50"])}


def gap_figures(history: pd.DataFrame, k: int) -> dict[str, Any]:
    """Generalisation gap now and its trend over the last k epochs.

    gap = val_loss - train_loss, relative gap = gap / train_loss. Train loss is averaged over
    the epoch under augmentation while val loss is measured after it without, so a small
    negative gap is normal.
    """
    rows = history.dropna(subset=["train_loss", "val_loss"])
    if rows.empty:
        return {"final": None, "final_relative": None, "trend_relative_per_epoch": None,
                "change_relative_last_k": None, "last_k": k}
    rel = ((rows["val_loss"] - rows["train_loss"]) / rows["train_loss"].abs().clip(lower=1e-12)).to_numpy()
    tail = rel[-(k + 1):]
    return {
        "final": float(rows["val_loss"].iloc[-1] - rows["train_loss"].iloc[-1]),
        "final_relative": float(rel[-1]),
        "trend_relative_per_epoch": slope(tail, relative=False),
        "change_relative_last_k": float(tail[-1] - tail[0]) if len(tail) > 1 else None,
        "last_k": k,
    }


# --------------------------------------------------------------------------- split report

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


# --------------------------------------------------------------------------- checks

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
    map_trend = slope(tail["val_map50"].to_numpy(), relative=False)
    train_trend = slope(tail["train_loss"].to_numpy())
    ev = {"val_loss_trend_per_epoch": val_trend, "val_map50_trend_per_epoch": map_trend,
          "train_loss_trend_per_epoch": train_trend, "min_improvement": p.min_improvement,
          "last_k": k}
    falling = math.isfinite(val_trend) and val_trend <= -p.min_improvement
    rising = math.isfinite(map_trend) and map_trend >= p.min_improvement
    if falling or rising:
        parts = ([f"val loss still falls {-val_trend:.1%} per epoch"] if falling else []) + \
                ([f"val mAP50 still rises {map_trend:.3f} per epoch"] if rising else [])
        return Finding("not converged", True, " and ".join(parts) + f" over the last {k} epochs", ev)
    return Finding("not converged", False, f"val loss and mAP50 changed less than "
                   f"{p.min_improvement} per epoch over the last {k} epochs", ev)


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


# --------------------------------------------------------------------------- advice

def _stop_at_best(best: int | None, n_frozen: int, params: Params) -> str | None:
    if best is None:
        return None
    if best > n_frozen:
        return (f"Stop at the best epoch: models/best.pt already keeps epoch {best}; to stop "
                f"training there, set `train.unfreeze_epochs: {best - n_frozen}` "
                f"(now {params.train.unfreeze_epochs}).")
    return (f"The best epoch ({best}) came before unfreezing: unfreeze later or not at all "
            f"(`train.unfreeze_epochs` lower than {params.train.unfreeze_epochs}), "
            f"and keep the frozen model.")


def _more_data(n_train: int | None, p: OverfitParams, strong: bool) -> str | None:
    if n_train is not None and n_train < p.small_dataset:
        return (f"More data: only {n_train} training images (< {p.small_dataset}). Labelling more "
                f"images helps more than any knob; practice suggests ~1500 images and ~10000 "
                f"objects per class for a robust detector.")
    if strong:
        return "More (and more varied) labelled data is the most reliable cure."
    return None


def advise(verdict: str, history: pd.DataFrame, params: Params, n_train: int | None,
           best: int | None) -> list[str]:
    """Concrete next steps for `verdict`, naming the params.yaml keys and values to try."""
    t, m, p = params.train, params.model, params.overfit
    # Global epochs before the unfrozen phase: its first epoch - 1, which is not the number of
    # frozen rows when patience stopped the frozen phase early.
    unfrozen = history.loc[history["phase"] == "unfrozen", "epoch"] if len(history) else pd.Series(dtype=float)
    if len(unfrozen):
        n_frozen = int(unfrozen.min()) - 1
    else:
        n_frozen = int((history["phase"] == "frozen").sum()) if len(history) else t.freeze_epochs
    out: list[str | None] = []
    if verdict == "overfitting":
        out += [
            _stop_at_best(best, n_frozen, params),
            (f"Let training stop itself: `train.patience: {max(5, t.unfreeze_epochs // 5)}` ends a phase after "
             "that many epochs without a val mAP50 gain (models/best.pt keeps the best epoch either way)."
             if t.patience == 0 else None),
            _more_data(n_train, p, strong=True),
            ("Augment harder: turn mosaic on (`train.mosaic: 0.5`, now 0)." if t.mosaic <= 0 else
             f"Augmentation: mosaic is on ({t.mosaic}); raise `train.scale_jitter` "
             f"({t.scale_jitter}) or `train.translate` ({t.translate}) as well."),
            f"Regularise: raise `train.weight_decay` from {t.weight_decay:g} to {t.weight_decay * 2:g}.",
            f"A smaller model has fewer parameters to memorise with: {_resize_model(m, smaller=True)}.",
            (f"Unfreeze later: keep the pretrained backbone frozen longer "
             f"(`train.freeze_epochs: {t.freeze_epochs + max(1, t.freeze_epochs)}`, now {t.freeze_epochs})."
             if m.pretrained != "none" else
             f"Start from pretrained weights ({_pretrained_hint(m)}): a backbone trained from "
             "scratch on few images memorises them."),
        ]
    elif verdict == "data mismatch":
        out += [
            "Look at reports/data/split.png: val should show the same classes, box sizes and "
            "objects per image as train. A seeded random split of a small dataset can draw an "
            f"unlucky val set: try another `seed` or a larger `split.val` (now {params.split.val}).",
            "If val loss is far below train loss, check for near-duplicate images shared by train "
            "and val (leakage), and remember train loss is measured under augmentation "
            f"(mosaic {t.mosaic}, scale jitter {t.scale_jitter}).",
            "If val is harder, check that val images come from the same cameras/sources and are "
            "labelled by the same rules (reports/data/annotate.json lists annotation warnings).",
            _more_data(n_train, p, strong=False),
        ]
    elif verdict == "not converged":
        extra = max(p.patience, t.unfreeze_epochs // 2)
        out += [
            f"Train longer: `train.unfreeze_epochs: {t.unfreeze_epochs + extra}` (now {t.unfreeze_epochs}); "
            "val is still improving at the last epoch.",
            (f"Mosaic ({t.mosaic}) makes training images harder and slows convergence; lower it "
             "or switch it off for a final run." if t.mosaic > 0 else None),
            f"If the curves are smooth but slow, raise the learning rate (`lr: {params.lr * 2:g}`, now {params.lr:g}).",
            (f"Unfreeze earlier (`train.freeze_epochs: {max(0, t.freeze_epochs // 2)}`, now "
             f"{t.freeze_epochs}) so the backbone adapts sooner." if t.freeze_epochs > 1 else None),
        ]
    elif verdict == "underfitting":
        out += [
            f"A bigger model: {_resize_model(m, smaller=False)}.",
            (f"Unfreeze earlier (`train.freeze_epochs: {max(0, t.freeze_epochs // 2)}`, now "
             f"{t.freeze_epochs}): a frozen backbone limits what the model can fit." if t.freeze_epochs > 0 else None),
            (f"Start from pretrained weights ({_pretrained_hint(m)})." if m.pretrained == "none" else None),
            f"Regularise less: lower `train.weight_decay` ({t.weight_decay:g} → {t.weight_decay / 2:g})"
            + (f" and mosaic (`train.mosaic: 0`, now {t.mosaic})." if t.mosaic > 0 else "."),
            f"Train longer or faster: more `train.unfreeze_epochs` (now {t.unfreeze_epochs}) or a higher `lr` (now {params.lr:g}).",
            "Check the labels: wrong or missing boxes cap what any model can learn "
            "(reports/data/annotate.json lists warnings).",
        ]
    else:
        out += [
            (f"Keep models/best.pt (epoch {best})." if best is not None else None),
            _more_data(n_train, p, strong=False) or
            "To go further, add data or try a larger model (`model.scale`, `model.backbone`) and watch the gap.",
        ]
    return [a for a in out if a]


# --------------------------------------------------------------------------- verdict

def judge(history: pd.DataFrame, params: Params, split_report: SplitReport | None = None) -> Verdict:
    """The verdict, its evidence and advice. Pure: no files read or written."""
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
        reason = (f"val loss has levelled off near its minimum, the gap "
                  f"({'n/a' if g is None else f'{g:.0%}'}) stays under {p.gap_ratio:.0%}"
                  + (f" and best val mAP50 is {best_map:.3f}" if best_map is not None else ""))
        findings.append(Finding("good fit", True, reason, {"gap_relative": g, "best_val_map50": best_map}))
        first = findings[-1]
    n_train = split_report.splits["train"].images if split_report else None
    return Verdict(
        verdict=first.name, reason=first.reason, best_epoch=best, best_val_map50=best_map,
        gap=gap, findings=findings, advice=advise(first.name, history, params, n_train, best),
        epochs=len(history), phase_boundary=phase_boundary(history), final=final_figures(history),
    )


# --------------------------------------------------------------------------- markdown

def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def render_markdown(v: Verdict, history: pd.DataFrame, png_name: str | None) -> str:
    """reports/overfitting.md: verdict first, then the figure, the figures, the checks, advice."""
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
    ]
    lines += ["| figure | value |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows] + [""]
    lines += ["## Advice", ""] + [f"- {a}" for a in v.advice] + [""]
    lines += ["## Checks", "", "| check | fired | why |", "|---|---|---|"]
    lines += [f"| {f.name} | {'yes' if f.fired else 'no'} | {f.reason} |" for f in v.findings]
    lines += ["", "## Evidence", ""]
    for f in v.findings:
        ev = ", ".join(f"{k} = {_fmt(x)}" for k, x in f.evidence.items())
        lines.append(f"- **{f.name}**: {ev or '–'}")
    lines += ["", "Train loss is averaged over each epoch under augmentation; val loss is measured "
              "after the epoch without it, so val slightly below train is normal.", ""]
    return "\n".join(lines)


def _resize_model(m, smaller: bool) -> str:
    """The next model size down or up: model.scale along n/s/m/l, then the neck width."""
    sizes = list(SCALES)
    i = sizes.index(m.scale) + (-1 if smaller else 1)
    if 0 <= i < len(sizes):
        return f"`model.scale: {sizes[i]}` (now {m.scale})"
    neck = pan_width(m.scale, m.neck_channels)
    new = max(16, neck // 2) if smaller else neck * 2
    return f"`model.neck_channels: {new}` (now {neck}) or a {'smaller' if smaller else 'larger'} `model.backbone` (now {m.backbone})"


def _pretrained_hint(m) -> str:
    if m.backbone == "cspdarknet":  # torchvision has no ImageNet weights for it
        return ("`model.pretrained: path/to/best.pt` of an earlier detpipe run, or a torchvision backbone "
                "with ImageNet weights: `model.backbone: resnet18` and `model.pretrained: imagenet`")
    return "`model.pretrained: imagenet`"

"""What limits the model: the levers the evidence points at, each a params.yaml key, the value to
try and the figures behind it.

- small objects (model.imgsz, model.p2): with enough small test objects, their AP is far below
  the larger sizes' or they make up most of the misses while being missed more often; imgsz
  when the median small training object is under TARGET_SMALL_PX after letterboxing, the
  stride-4 level when under P2_BELOW_PX (larger objects are not short of resolution);
- more epochs (train.unfreeze_epochs, or train.time on a budget): val mAP50 still rising at the last epoch;
- more data / augmentation (train.mosaic): overfitting on few training images;
- a pretrained start (model.pretrained): none, on few training images.

Pure functions of the history, the params, the split report and the map stage's metrics (none of
them holds a wall time, so the overfit stage stays deterministic).
"""
from __future__ import annotations

import math

import pandas as pd

from detpipe.artifacts.base import Scalar
from detpipe.artifacts.metrics import SIZE_STATS, MapMetrics
from detpipe.artifacts.overfit_verdict import InputScale
from detpipe.artifacts.overfit_verdict import LeverRecord as Lever
from detpipe.artifacts.split_report import SplitReport
from detpipe.params import Params
from detpipe.reports.split_check import MIN_OBJECTS_TO_COMPARE

# A small object should span at least one cell of the finest default level (stride 8) after
# letterboxing; below that few anchor points fall inside it.
TARGET_SMALL_PX = 8.0
# A stride-4 level is for objects under two stride-8 cells; larger ones are not short of resolution.
P2_BELOW_PX = 16.0
IMGSZ_CAP = 1280            # the largest input size the advice quotes (compute grows with its square)
SMALL_AP_RATIO = 0.5        # AP_small below half the larger sizes' AP is "far below"
MISS_SHARE = 0.5            # small objects are at least half of the misses ...
MISS_RATE_RATIO = 1.5       # ... and are missed at least 1.5x as often as larger ones ...
MIN_SMALL_MISS_RATE = 0.1   # ... and at least this often


def input_scale(params: Params, split_report: SplitReport | None) -> InputScale:
    """The train split's median object sizes (split report) times model.imgsz."""
    imgsz = params.model.imgsz if isinstance(params.model.imgsz, int) else None
    scale = split_report.splits["train"].object_scale if split_report and "train" in split_report.splits else None
    px = lambda f: None if f is None or imgsz is None else round(f * imgsz, 2)  # noqa: E731
    return InputScale(imgsz=imgsz, median_px=px(scale.median if scale else None),
                      median_small_px=px(scale.median_small if scale else None))


def find_levers(history: pd.DataFrame, params: Params, split_report: SplitReport | None,
                metrics: MapMetrics | None, overfitting: bool) -> list[Lever]:
    """Every lever whose evidence holds, most specific first. `overfitting`: the overfitting check fired."""
    n_train = split_report.splits["train"].images if split_report and "train" in split_report.splits else None
    levers = small_object_levers(metrics, params, input_scale(params, split_report))
    levers += [lv for lv in (more_epochs(history, params), more_data(history, params, n_train, overfitting),
                             pretrained_start(params, n_train)) if lv]
    return levers


def _size_figures(m: MapMetrics) -> dict[str, Scalar]:
    figs: dict[str, Scalar] = {}
    for name, stat in SIZE_STATS.items():
        s = m.sizes[name]
        ap = getattr(m.coco, stat)
        figs[f"ap_{name}"] = None if ap is None or ap < 0 else ap
        figs[f"gt_{name}"] = s.ground_truth
        figs[f"missed_{name}"] = s.ground_truth - s.found50
    return figs


def small_objects_limit(m: MapMetrics) -> tuple[bool, str, dict[str, Scalar]]:
    """(fired, why, figures): small objects limit the model when there are enough of them (the
    split check's minimum) and their AP is far below the larger sizes' (those with enough
    objects) or they are most of the misses and missed more often than larger objects."""
    f = _size_figures(m)
    n_small = int(f["gt_small"] or 0)
    if n_small < MIN_OBJECTS_TO_COMPARE:
        return False, f"only {n_small} small test objects (< {MIN_OBJECTS_TO_COMPARE})", f
    larger = [(n, f[f"ap_{n}"]) for n in ("medium", "large")
              if (f[f"gt_{n}"] or 0) >= MIN_OBJECTS_TO_COMPARE and f[f"ap_{n}"] is not None]
    reasons = []
    ap_s = f["ap_small"]
    if ap_s is not None and larger:
        name, ref = max(larger, key=lambda x: x[1])
        if ap_s < SMALL_AP_RATIO * ref:
            reasons.append(f"AP_small {ap_s:.3f} on {n_small} small test objects is under half AP_{name} {ref:.3f}")
    missed_s = int(f["missed_small"] or 0)
    missed = missed_s + int(f["missed_medium"] or 0) + int(f["missed_large"] or 0)
    n_rest = int(f["gt_medium"] or 0) + int(f["gt_large"] or 0)
    rate_s = missed_s / n_small
    rate_rest = (missed - missed_s) / n_rest if n_rest else 0.0
    f.update(small_miss_rate=round(rate_s, 4), other_miss_rate=round(rate_rest, 4))
    if (missed and missed_s >= MISS_SHARE * missed and rate_s >= MISS_RATE_RATIO * rate_rest
            and rate_s >= MIN_SMALL_MISS_RATE):
        rates = (f"{rate_s:.0%} of small objects missed vs {rate_rest:.0%} of larger ones" if n_rest else
                 f"{rate_s:.0%} of them missed; the test split has no larger objects")
        reasons.append(f"{missed_s} of the {missed} test objects no detection finds at IoU 0.5 are small ({rates})")
    return bool(reasons), "; ".join(reasons), f


def imgsz_for(median_px: float, imgsz: int) -> int:
    """The smallest multiple of 32 that brings an object of `median_px` at `imgsz` to TARGET_SMALL_PX, capped."""
    need = math.ceil(imgsz * TARGET_SMALL_PX / max(median_px, 1e-9) / 32) * 32
    return int(min(max(need, imgsz + 32), IMGSZ_CAP))


def small_object_levers(m: MapMetrics | None, params: Params, scale: InputScale) -> list[Lever]:
    if m is None:
        return []
    fired, why, ev = small_objects_limit(m)
    if not fired:
        return []
    ev = {**ev, "imgsz": scale.imgsz, "median_small_px": scale.median_small_px}
    levers = []
    px, now = scale.median_small_px, scale.imgsz
    if px is not None and now is not None and px < TARGET_SMALL_PX and now < IMGSZ_CAP:
        new = imgsz_for(px, now)
        reach = px * new / now
        levers.append(Lever(key="model.imgsz", advice=(
            f"Small objects limit the model: {why}. Letterboxed to {now} the median small training object "
            f"is {px:.1f} px; `model.imgsz: {new}` (now {now}) makes it {reach:.1f} px"
            + ("" if reach >= TARGET_SMALL_PX else f", the most the advice quotes (target {TARGET_SMALL_PX:g} px)")
            + f" at ~{(new / now) ** 2:.1f}x the compute per image."), evidence={**ev, "suggested_imgsz": new}))
    if not getattr(params.model, "p2", False) and (px is None or px < P2_BELOW_PX):
        has_p2 = "p2" in type(params.model).model_fields
        size = "" if levers else (f" (the median small training object is {px:.1f} px at imgsz {now})"
                                  if px is not None else "")
        levers.append(Lever(key="model.p2", advice=(
            ("Small objects limit the model: " + why + size + ". " if not levers else "")
            + "A stride-4 detection level finds objects a few pixels wide: `model.p2: true`"
            + (" (now false)." if has_p2 else " (if your detpipe has it).")), evidence=ev))
    return levers


def more_epochs(history: pd.DataFrame, params: Params) -> Lever | None:
    """Val mAP50 still rising at the last epoch: the best epoch is among the last `patience` and
    val mAP50 gained at least `min_improvement` of its level per epoch over them (relative, as the
    "not converged" check measures it)."""
    maps = history.dropna(subset=["val_map50"])
    k, t = params.overfit.patience, params.train
    if len(maps) <= k:
        return None
    epochs, vals = maps["epoch"].astype(int).to_numpy(), maps["val_map50"].to_numpy()
    best = int(epochs[vals.argmax()])
    gain = float(vals[-1] - vals[-1 - k])
    level = float(vals[-1 - k:].mean())
    if best not in set(epochs[-k:]) or level <= 0 or gain / k / level < params.overfit.min_improvement:
        return None
    key, setting = train_longer(params, history, max(k, unfrozen_epochs(history, params) // 2))
    return Lever(key=key, advice=(
        f"More epochs: val mAP50 is still rising (+{gain:.3f} over the last {k} epochs, best at epoch {best} "
        f"of {int(epochs[-1])}); {setting}."),
        evidence={"best_epoch": best, "last_epoch": int(epochs[-1]), "val_map50_gain_last_k": round(gain, 6), "last_k": k})


def unfrozen_epochs(history: pd.DataFrame, params: Params) -> int:
    """The unfrozen epoch count the advice starts from: train.unfreeze_epochs, or on a train.time budget
    (which ignores it) the unfrozen epochs the history holds."""
    if params.train.time <= 0:
        return params.train.unfreeze_epochs
    return int((history["phase"] == "unfrozen").sum()) if len(history) else 0


def train_longer(params: Params, history: pd.DataFrame, extra: int) -> tuple[str, str]:
    """(key, "`key: value` (now ...)") that trains `extra` more unfrozen epochs: train.unfreeze_epochs,
    or on a budget a train.time that many epochs longer, at the epoch time the budget was fitted with
    (the frozen epochs count at that time too, as the fitting counts them)."""
    t = params.train
    if t.time <= 0:
        return "train.unfreeze_epochs", f"`train.unfreeze_epochs: {t.unfreeze_epochs + extra}` (now {t.unfreeze_epochs})"
    n = max(1, unfrozen_epochs(history, params))
    frozen = t.freeze_epochs if isinstance(t.freeze_epochs, int) else 0
    hours = math.ceil(t.time * (frozen + n + extra) / (frozen + n) * 1000) / 1000
    return "train.time", f"`train.time: {hours:g}` (now {t.time:g} h, which trained {n} unfrozen epochs)"


def _gap(history: pd.DataFrame) -> float | None:
    rows = history.dropna(subset=["train_loss", "val_loss"])
    if rows.empty:
        return None
    last = rows.iloc[-1]
    return float((last["val_loss"] - last["train_loss"]) / max(abs(last["train_loss"]), 1e-12))


def more_data(history: pd.DataFrame, params: Params, n_train: int | None, overfitting: bool) -> Lever | None:
    """Overfitting (the check fired) on fewer than overfit.small_dataset training images."""
    small = params.overfit.small_dataset
    if not overfitting or n_train is None or n_train >= small:
        return None
    t, gap = params.train, _gap(history)
    mosaic = min(1.0, max(0.5, t.mosaic + 0.25))
    gap_text = "" if gap is None else f"val loss {gap:+.0%} vs train"
    return Lever(key="train.mosaic", advice=(
        f"More data or stronger augmentation: the model overfits ({gap_text}) on only {n_train} training "
        f"images (< overfit.small_dataset {small}); label more images, and meanwhile augment harder: "
        + (f"`train.mosaic: {mosaic:g}` (now {t.mosaic:g})." if mosaic > t.mosaic else
           f"mosaic is at {t.mosaic:g}; raise `train.scale_jitter` (now {t.scale_jitter:g}).")),
        evidence={"train_images": n_train, "small_dataset": small, "gap_relative": None if gap is None else round(gap, 6)})


def pretrained_start(params: Params, n_train: int | None) -> Lever | None:
    """No pretrained start (model.pretrained: none) on fewer than overfit.small_dataset training images."""
    small = params.overfit.small_dataset
    if params.model.pretrained != "none" or n_train is None or n_train >= small:
        return None
    return Lever(key="model.pretrained", advice=(
        f"A pretrained start: the model trains from scratch (`model.pretrained: none`) on only {n_train} "
        f"training images (< overfit.small_dataset {small}); use {pretrained_hint(params.model)}."),
        evidence={"train_images": n_train, "small_dataset": small, "pretrained": params.model.pretrained})


def pretrained_hint(m) -> str:
    """Where pretrained weights for `m` (ModelParams) come from."""
    if m.backbone == "cspdarknet":  # torchvision has no ImageNet weights for it
        return ("`model.pretrained: path/to/weights.pt`: a YOLOv8 state dict converted by `python -m detpipe "
                "import-weights` (README), or models/best.pt of an earlier detpipe run on similar data")
    return "`model.pretrained: imagenet`"

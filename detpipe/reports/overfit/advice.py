"""What to try next for each verdict, naming the params.yaml keys and their current values."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pandas as pd

from detpipe.catalog import SCALES, pan_width
from detpipe.params import OverfitParams, Params
from detpipe.reports.overfit.levers import Lever, pretrained_hint, train_longer, unfrozen_epochs


def advise(verdict: str, history: pd.DataFrame, params: Params, n_train: int | None,
           best: int | None, levers: Sequence[Lever] = ()) -> list[str]:
    """Concrete next steps: the levers the evidence points at first, then the steps for `verdict`
    that change a key no lever already names (each names the params.yaml keys and values to try)."""
    steps = ADVICE[verdict](Context(params, n_train, best, frozen_epochs(history, params.train.freeze_epochs),
                                    unfrozen_epochs(history, params), history))
    named = [f"`{lv.key}" for lv in levers]
    return [lv.advice for lv in levers] + [a for a in steps if a and not any(k in a for k in named)]


@dataclass(frozen=True)
class Context:
    """What the advice names: the recipe, the training images, the best epoch, the frozen epochs, the
    unfrozen epoch count (on a train.time budget, the epochs it trained) and the history."""

    params: Params
    n_train: int | None
    best: int | None
    n_frozen: int
    n_unfrozen: int
    history: pd.DataFrame


def frozen_epochs(history: pd.DataFrame, planned: int) -> int:
    """Global epochs before the unfrozen phase: its first epoch - 1, which is not the number of
    frozen rows when patience stopped the frozen phase early."""
    unfrozen = history.loc[history["phase"] == "unfrozen", "epoch"] if len(history) else pd.Series(dtype=float)
    if len(unfrozen):
        return int(unfrozen.min()) - 1
    return int((history["phase"] == "frozen").sum()) if len(history) else planned


def _overfitting(c: Context) -> list[str | None]:
    t, m, p = c.params.train, c.params.model, c.params.overfit
    return [
        _stop_at_best(c),
        (f"Let training stop itself: `train.patience: {max(5, c.n_unfrozen // 5)}` ends a phase after "
         "that many epochs without a val mAP50 gain (models/best.pt keeps the best epoch either way)."
         if t.patience == 0 else None),
        _more_data(c.n_train, p, strong=True),
        ("Augment harder: turn mosaic on (`train.mosaic: 0.5`, now 0)." if t.mosaic <= 0 else
         f"Augmentation: mosaic is on ({t.mosaic}); raise `train.scale_jitter` "
         f"({t.scale_jitter}) or `train.translate` ({t.translate}) as well."),
        f"Regularise: raise `train.weight_decay` from {t.weight_decay:g} to {t.weight_decay * 2:g}.",
        f"A smaller model has fewer parameters to memorise with: {_resize_model(m, smaller=True)}.",
        (f"Unfreeze later: keep the pretrained backbone frozen longer "
         f"(`train.freeze_epochs: {t.freeze_epochs + max(1, t.freeze_epochs)}`, now {t.freeze_epochs})."
         if m.pretrained != "none" else
         f"Start from pretrained weights ({pretrained_hint(m)}): a backbone trained from "
         "scratch on few images memorises them."),
    ]


def _data_mismatch(c: Context) -> list[str | None]:
    t = c.params.train
    return [
        "Look at reports/data/split.png: val should show the same classes, box sizes and "
        "objects per image as train. A seeded random split of a small dataset can draw an "
        f"unlucky val set: try another `seed` or a larger `split.val` (now {c.params.split.val}).",
        "If val loss is far below train loss, check for near-duplicate images shared by train "
        "and val (leakage), and remember train loss is measured under augmentation "
        f"(mosaic {t.mosaic}, scale jitter {t.scale_jitter}).",
        "If val is harder, check that val images come from the same cameras/sources and are "
        "labelled by the same rules (reports/data/annotate.json lists annotation warnings).",
        _more_data(c.n_train, c.params.overfit, strong=False),
    ]


def _not_converged(c: Context) -> list[str | None]:
    t, p, lr = c.params.train, c.params.overfit, c.params.lr
    return [
        f"Train longer: {train_longer(c.params, c.history, max(p.patience, c.n_unfrozen // 2))[1]}; "
        "val is still improving at the last epoch.",
        (f"Mosaic ({t.mosaic}) makes training images harder and slows convergence; lower it "
         "or switch it off for a final run." if t.mosaic > 0 else None),
        f"If the curves are smooth but slow, raise the learning rate (`lr: {lr * 2:g}`, now {lr:g}).",
        (f"Unfreeze earlier (`train.freeze_epochs: {max(0, t.freeze_epochs // 2)}`, now "
         f"{t.freeze_epochs}) so the backbone adapts sooner." if t.freeze_epochs > 1 else None),
    ]


def _underfitting(c: Context) -> list[str | None]:
    t, m, lr = c.params.train, c.params.model, c.params.lr
    return [
        f"A bigger model: {_resize_model(m, smaller=False)}.",
        (f"Unfreeze earlier (`train.freeze_epochs: {max(0, t.freeze_epochs // 2)}`, now "
         f"{t.freeze_epochs}): a frozen backbone limits what the model can fit." if t.freeze_epochs > 0 else None),
        (f"Start from pretrained weights ({pretrained_hint(m)})." if m.pretrained == "none" else None),
        f"Regularise less: lower `train.weight_decay` ({t.weight_decay:g} → {t.weight_decay / 2:g})"
        + (f" and mosaic (`train.mosaic: 0`, now {t.mosaic})." if t.mosaic > 0 else "."),
        (f"Train longer or faster: a larger `train.time` (now {t.time:g} h, {c.n_unfrozen} unfrozen epochs)"
         if t.time > 0 else f"Train longer or faster: more `train.unfreeze_epochs` (now {t.unfreeze_epochs})")
        + f" or a higher `lr` (now {lr:g}).",
        "Check the labels: wrong or missing boxes cap what any model can learn "
        "(reports/data/annotate.json lists warnings).",
    ]


def _good_fit(c: Context) -> list[str | None]:
    return [
        (f"Keep models/best.pt (epoch {c.best})." if c.best is not None else None),
        _more_data(c.n_train, c.params.overfit, strong=False) or
        "To go further, add data or try a larger model (`model.scale`, `model.backbone`) and watch the gap.",
    ]


ADVICE = {"overfitting": _overfitting, "data mismatch": _data_mismatch, "not converged": _not_converged,
          "underfitting": _underfitting, "still improving": _not_converged, "good fit": _good_fit}


def _stop_at_best(c: Context) -> str | None:
    best, n_frozen, t = c.best, c.n_frozen, c.params.train
    if best is None:
        return None
    # On a budget the count is fitted, not set: stopping at an epoch means setting it instead.
    now = (f"now fitted to `train.time` {t.time:g} h: {c.n_unfrozen}; set `train.time: 0` with it" if t.time > 0
           else f"now {c.n_unfrozen}")
    if best > n_frozen:
        return (f"Stop at the best epoch: models/best.pt already keeps epoch {best}; to stop "
                f"training there, set `train.unfreeze_epochs: {best - n_frozen}` ({now}).")
    return (f"The best epoch ({best}) came before unfreezing: unfreeze later or not at all "
            f"(`train.unfreeze_epochs` lower than {c.n_unfrozen}{f'; {now}' if t.time > 0 else ''}), "
            f"and keep the frozen model.")


def _more_data(n_train: int | None, p: OverfitParams, strong: bool) -> str | None:
    if n_train is not None and n_train < p.small_dataset:
        return (f"More data: only {n_train} training images (< {p.small_dataset}). Labelling more "
                f"images helps more than any knob; practice suggests ~1500 images and ~10000 "
                f"objects per class for a robust detector.")
    if strong:
        return "More (and more varied) labelled data is the most reliable cure."
    return None


def _resize_model(m, smaller: bool) -> str:
    """The next model size down or up: model.scale along n/s/m/l, then the neck width."""
    sizes = list(SCALES)
    i = sizes.index(m.scale) + (-1 if smaller else 1)
    if 0 <= i < len(sizes):
        return f"`model.scale: {sizes[i]}` (now {m.scale})"
    neck = pan_width(m.scale, m.neck_channels)
    new = max(16, neck // 2) if smaller else neck * 2
    return f"`model.neck_channels: {new}` (now {neck}) or a {'smaller' if smaller else 'larger'} `model.backbone` (now {m.backbone})"


"""Settings a run reads from its own inputs: each `auto` in params.yaml becomes the number the run uses.

A stage resolves them once, at its start (`resolve`), and from then on works with the resolved
params: it trains with them, fingerprints them and stores them in the weights. `auto` and the
number it resolves to are therefore the same run: switching params.yaml between them resumes the
finished checkpoint and trains nothing. Each choice carries its reason, printed by the
stage and kept in the weights (`Choice.record`).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .artifacts.base import Part

AUTO = "auto"
# Frozen epochs with pretrained weights: neck and head settle on the pretrained features before
# the backbone's own gradients start (the value every detpipe release before `auto` used).
PRETRAINED_FREEZE_EPOCHS = 3
# model.imgsz auto: the smallest multiple of 32 at which the median train object's shorter side spans
# ANCHORS_ACROSS anchor points of the finest head level after letterboxing (the assigner trains only
# the anchor points inside a box, so a side under one stride may hold none), within these bounds:
IMGSZ_FLOOR = 320   # the default: auto raises the size for small objects, never trades accuracy for speed
IMGSZ_CAP = 640     # Ultralytics' default size; a CPU epoch costs ~4x 320's. Device-independent on
#                     purpose: the size changes the weights, so it must not depend on the machine.
ANCHORS_ACROSS = 2


class Choice(Part):
    """One resolved setting: `key` (dotted params key) was `setting` in params.yaml, the run uses `value`.
    Stored with the weights (`record`) and in reports/train/recipe.json."""

    key: str
    setting: int | str
    value: int
    reason: str

    def line(self) -> str:
        if self.setting == AUTO:
            return f"{self.key}: {self.value} (auto) — {self.reason}"
        return f"{self.key}: {self.value} ({self.reason})"

    def record(self) -> dict[str, Any]:
        """Plain types, for the weights file (weights_only=True loads no classes)."""
        return self.model_dump(mode="json")


def _choice(key: str, setting: int | str, value: int, reason: str) -> Choice:
    return Choice(key=key, setting=setting, value=value, reason=reason)


def freeze_epochs(params) -> Choice:
    """train.freeze_epochs: `auto` trains the frozen phase only when the backbone starts from weights
    that learnt something; a random backbone held frozen makes the head fit noise features."""
    setting, pretrained = params.train.freeze_epochs, params.model.pretrained
    if setting != AUTO:
        return _choice("train.freeze_epochs", setting, setting, "set in params.yaml")
    if pretrained in ("", "none"):
        return _choice("train.freeze_epochs", AUTO, 0,
                       "model.pretrained is none, a frozen random backbone learns nothing; "
                       "set train.freeze_epochs to force it")
    return _choice("train.freeze_epochs", AUTO, PRETRAINED_FREEZE_EPOCHS,
                   f"model.pretrained is {pretrained}: neck and head first fit its features")


def resolve(params, choices: tuple[Choice, ...]):
    """`params` (a Params or a stage's ParamsView) with each choice's value in place of its setting."""
    sections: dict[str, dict[str, int]] = {}
    for c in choices:
        section, name = c.key.split(".")
        sections.setdefault(section, {})[name] = c.value
    return params.replace(**{s: getattr(params, s).replace(**values) for s, values in sections.items()})


def imgsz(params, short_sides: np.ndarray | None, smallest_stride: int) -> Choice:
    """model.imgsz: `auto` reads the train split's objects (`short_sides`: each box's shorter side /
    its image's longer side, `data.object_sizes.relative_short_sides`; None when not auto)."""
    setting = params.model.imgsz
    if setting != AUTO:
        return _choice("model.imgsz", setting, setting, "set in params.yaml")
    if short_sides is None or not len(short_sides):
        return _choice("model.imgsz", AUTO, IMGSZ_FLOOR, "the train split has no boxes to size it by")
    median, target = float(np.median(short_sides)), ANCHORS_ACROSS * smallest_stride
    need = 32 * math.ceil(target / max(median, 1e-9) / 32)
    size = min(max(need, IMGSZ_FLOOR), IMGSZ_CAP)
    at = f"the median train object's shorter side is {median * IMGSZ_FLOOR:.1f} px at {IMGSZ_FLOOR}"
    goal = (f"{target} px ({ANCHORS_ACROSS} anchor points of stride {smallest_stride} across it; the assigner "
            "trains only anchor points inside a box)")
    if need <= IMGSZ_FLOOR:
        reason = f"{at}, already >= {goal}"
    elif need <= IMGSZ_CAP:
        reason = f"{at}; {size} brings it to {median * size:.1f} px >= {goal}"
    else:
        reason = (f"{at}; reaching {goal} would take {need}, above the compute cap {IMGSZ_CAP} (it gets "
                  f"{median * size:.1f} px): objects this small need a finer head level or image tiles")
    return _choice("model.imgsz", AUTO, size, reason)


def fit_to_budget(params, first_epoch_s: float) -> tuple[Choice, str | None]:
    """train.unfreeze_epochs fitted to the wall-clock budget train.time (hours, both phases), as
    Ultralytics' `time=`: from `first_epoch_s`, the measured wall time of the unfrozen phase's first
    epoch (training and validation). `params` has its freeze_epochs resolved. The frozen epochs are
    counted at that time too, an upper bound (they compute no backbone gradients), so the frozen
    weights hold no wall time. Returns the choice and a warning when the budget is shorter than one
    epoch (the phase then trains one epoch, over the budget)."""
    t = params.train
    budget, epoch_s = t.time * 3600, max(first_epoch_s, 1e-6)
    frozen_s = t.freeze_epochs * epoch_s
    fits = math.floor((budget - frozen_s) / epoch_s + 1e-9)  # 40 s of 10 s epochs is 4, whatever the rounding
    value = max(1, fits)
    counted = (f"; {t.freeze_epochs} frozen epoch{'s' * (t.freeze_epochs != 1)} counted at that time, an upper "
               f"bound ({frozen_s:.1f} s)" if t.freeze_epochs else "")
    reason = (f"fitted to the budget train.time {t.time:g} h ({budget:.0f} s): first unfrozen epoch {first_epoch_s:.1f} s "
              f"incl. validation{counted}; params.yaml's train.unfreeze_epochs {t.unfreeze_epochs} is ignored")
    warning = None
    if fits < 1:
        warning = (f"train.time {t.time:g} h ({budget:.0f} s) is shorter than one unfrozen epoch "
                   f"({first_epoch_s:.1f} s){' plus the frozen ones' if t.freeze_epochs else ''}: training 1 epoch, "
                   "over the budget; raise train.time")
        reason += "; the budget is shorter than one epoch: 1 epoch, over the budget"
    return _choice("train.unfreeze_epochs", t.unfreeze_epochs, value, reason), warning

"""reports/overfitting.json: the overfit stage's verdict, its figures, every check and the advice.

It is a DVC metrics file: `dvc metrics show` makes a column of every number, string and bool but
skips lists, so the headline figures are scalars and the sentences (reason, checks, advice) lists.
Floats are rounded to 6 digits; a figure that is not finite is null.
"""
from __future__ import annotations

from typing import Literal

from .base import Artifact, Part, Scalar

VERDICTS = ("overfitting", "data mismatch", "not converged", "underfitting", "still improving", "good fit")
VerdictName = Literal[VERDICTS]  # type: ignore[valid-type]  # one list: a new verdict is added once


class FinalFigures(Part):
    """The last epoch's losses and mAP."""

    epoch: int | None
    train_loss: float | None
    val_loss: float | None
    val_map50: float | None


class Gap(Part):
    """The generalisation gap val - train loss, now and over the last `last_k` epochs."""

    final: float | None
    final_relative: float | None
    trend_relative_per_epoch: float | None
    change_relative_last_k: float | None
    last_k: int


class Check(Part):
    check: VerdictName
    fired: bool
    reason: str
    evidence: dict[str, Scalar]


class LeverRecord(Part):
    """A lever the evidence points at: the params key, the advice sentence, its figures."""

    key: str
    advice: str
    evidence: dict[str, Scalar]


class InputScale(Part):
    """The train split's median object size, √(w·h), in the pixels the model sees (letterboxed to
    imgsz); None when unknown."""

    imgsz: int | None
    median_px: float | None
    median_small_px: float | None


class OverfitVerdict(Artifact):
    WRITER = "overfit"

    verdict: VerdictName
    epochs: int
    best_epoch: int | None
    best_val_map50: float | None
    final: FinalFigures
    gap: Gap
    evidence: dict[str, Scalar]      # the deciding check's figures
    reason: list[str]
    also_noted: list[str]            # the other checks that fired
    checks: list[Check]
    advice: list[str]               # the levers' sentences first
    levers: list[LeverRecord]        # what limits the model, from the evidence
    input_scale: InputScale

"""The training history: one TSV per training phase (reports/train/{frozen,unfrozen}.tsv), one
row per epoch, written in full after every epoch by the train stage.

`EpochRow` is the one owner of the columns: the train phase builds rows of it, the overfit
stage, the training figure, `dvc plots` and the report page read them through `read_history`.
The val figures are those of the EMA weights on the val split after the epoch: the loss of the
training objective, VOC mAP50, COCO mAP50-95, and the pooled precision and recall at the
confidence that maximises their F1 (`metrics.epoch.val_scores`).
"""
from __future__ import annotations

import csv
import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from .. import atomic
from ._strict import ArtifactError


@dataclass(frozen=True)
class EpochRow:
    epoch: int            # global: the frozen phase's epochs, then the unfrozen phase's
    phase: str            # frozen | unfrozen
    train_loss: float     # epoch mean over the augmented train batches
    val_loss: float
    val_map50: float
    val_map50_95: float
    val_precision: float  # pooled over classes, at the confidence of best pooled F1
    val_recall: float
    lr: float
    seconds: float        # wall time of the epoch: training pass and validation
    val_seconds: float    # of which validation
    images_per_s: float   # training throughput
    mosaic: bool          # mosaic augmentation was on in this epoch
    train_box_loss: float
    train_cls_loss: float
    val_box_loss: float
    val_cls_loss: float


COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(EpochRow))
_TYPES = {f.name: f.type for f in dataclasses.fields(EpochRow)}
WRITER = "the train stage (dvc repro)"


def _cell(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def write_history(path: str | Path, rows: Iterable[EpochRow | dict]) -> None:
    """Rewrite the TSV in full, atomically (a declared output, so never appended to). Rows may be
    EpochRow or their `asdict` (as checkpoints keep them); any other set of keys is an error."""
    text = io.StringIO(newline="")
    writer = csv.writer(text, delimiter="\t", lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        row = EpochRow(**row) if isinstance(row, dict) else row
        writer.writerow([_cell(getattr(row, c)) for c in COLUMNS])
    atomic.write_text(path, text.getvalue())


def read_history(path: str | Path) -> pd.DataFrame:
    """The epochs of one TSV, columns exactly `COLUMNS` (numbers as float, phase as str, mosaic as
    bool); ArtifactError naming the file when the header or a value does not fit."""
    try:
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise ArtifactError(f"{path}: empty file, not even a header; rerun {WRITER}") from None
    if tuple(frame.columns) != COLUMNS:
        missing = [c for c in COLUMNS if c not in frame.columns]
        unknown = [c for c in frame.columns if c not in COLUMNS]
        what = (f"missing column {missing[0]!r}" if missing else f"unknown column {unknown[0]!r}" if unknown
                else "columns out of order")
        raise ArtifactError(f"{path}: {what}; the history is not what this version writes: rerun {WRITER}")
    out = pd.DataFrame(index=frame.index)
    for col in COLUMNS:
        kind = _TYPES[col]
        if kind == "str":
            out[col] = frame[col]
            continue
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = values.isna() & (frame[col].str.lower() != "nan")
        if bad.any():
            line = int(bad.idxmax()) + 2
            raise ArtifactError(f"{path}:{line}: {col} is {frame[col][bad.idxmax()]!r}, not a number; rerun {WRITER}")
        out[col] = values.astype(bool) if kind == "bool" else values.astype(float)
    return out

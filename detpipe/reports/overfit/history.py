"""The training history (the two phase TSVs concatenated) and the figures the verdict reads from it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from detpipe.artifacts.history import COLUMNS, read_history



def load_history(*paths: str | Path) -> pd.DataFrame:
    """Concatenate the phase TSVs (`artifacts.history`; files not there yet skipped), sorted by global epoch."""
    frames = [read_history(p) for p in paths if Path(p).is_file()]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=str if c == "phase" else float) for c in COLUMNS})
    history = pd.concat(frames, ignore_index=True)
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

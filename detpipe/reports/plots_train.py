"""Training curves: losses, val mAP50 / mAP50-95 / precision / recall and the generalisation gap
per epoch across both phases (the columns of `artifacts.history.EpochRow`)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

TRAIN_COLOR = "#1f77b4"
VAL_COLOR = "#d62728"
MAP_COLOR = "#2ca02c"
BEST_COLOR = "#9467bd"
FROZEN_SHADE = "#eeeeee"
MAP95_COLOR = "#17becf"
PRECISION_COLOR = "#ff7f0e"
RECALL_COLOR = "#8c564b"
MOSAIC_COLOR = "#7f7f7f"


def _phase_background(ax: plt.Axes, history: pd.DataFrame, label: bool, text: bool) -> None:
    """Grey band over the frozen phase and a dashed line where the backbone is unfrozen."""
    frozen = history.loc[history["phase"] == "frozen", "epoch"]
    unfrozen = history.loc[history["phase"] == "unfrozen", "epoch"]
    if frozen.empty:
        return
    lo = float(frozen.min()) - 0.5
    hi = float(frozen.max()) + 0.5  # not the midpoint: an early-stopped frozen phase leaves a gap
    ax.axvspan(lo, hi, color=FROZEN_SHADE, zorder=0)
    if len(unfrozen):
        ax.axvline(hi, color="black", linestyle="--", linewidth=1,
                   label="backbone unfrozen" if label else None)
    if text:
        # On the mAP panel: its top-left is empty early in training, unlike the loss panel's.
        ax.text(lo + 0.1, 0.96, "frozen\nbackbone", transform=ax.get_xaxis_transform(),
                ha="left", va="top", fontsize=8, color="#555555")


def mosaic_stop(history: pd.DataFrame) -> float | None:
    """Epoch position (x.5) after the last epoch that drew mosaics, when later epochs did not."""
    on = history.loc[history["mosaic"].astype(bool), "epoch"]
    if on.empty or on.max() >= history["epoch"].max():
        return None
    return float(on.max()) + 0.5


def _mosaic_line(ax: plt.Axes, at: float | None, label: bool) -> None:
    if at is not None:
        ax.axvline(at, color=MOSAIC_COLOR, linestyle="-.", linewidth=1,
                   label=f"mosaic off after epoch {at - 0.5:.0f}" if label else None)


def _best_line(ax: plt.Axes, best_epoch: int | None, label: bool) -> None:
    if best_epoch is not None:
        ax.axvline(best_epoch, color=BEST_COLOR, linestyle=":", linewidth=1.5,
                   label=f"best epoch ({best_epoch})" if label else None)


def _plot_series(ax: plt.Axes, x: pd.Series, y: pd.Series, **kw) -> None:
    ok = y.notna()
    many = ok.sum() > 40
    ax.plot(x[ok], y[ok], marker=None if many else "o", markersize=3, linewidth=1.6, **kw)


def plot_training_curves(history: pd.DataFrame, out_path: str | Path, best_epoch: int | None = None,
                         gap_ratio: float | None = None, title: str = "Training curves") -> Path:
    """Three panels sharing the epoch axis: losses; val mAP50, mAP50-95, precision and recall;
    relative gap (val - train) / train.

    The frozen phase is shaded and the unfreeze boundary dashed; the best epoch is dotted and the
    last mosaic epoch dash-dotted.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True,
                             gridspec_kw={"height_ratios": [3, 2, 1.6]})
    fig.suptitle(title, fontsize=13)
    if history.empty:
        for ax in axes:
            ax.text(0.5, 0.5, "no epochs recorded", ha="center", va="center", transform=ax.transAxes)
        fig.savefig(out_path, dpi=110)
        plt.close(fig)
        return out_path
    x = history["epoch"]
    ax_loss, ax_map, ax_gap = axes
    mosaic_at = mosaic_stop(history)
    for i, ax in enumerate(axes):
        _phase_background(ax, history, label=i == 0, text=i == 1)
        _best_line(ax, best_epoch, label=i == 0)
        _mosaic_line(ax, mosaic_at, label=i == 0)
        ax.grid(True, alpha=0.3)

    _plot_series(ax_loss, x, history["train_loss"], color=TRAIN_COLOR, label="train loss (augmented, epoch mean)")
    _plot_series(ax_loss, x, history["val_loss"], color=VAL_COLOR, label="val loss (end of epoch)")
    losses = history[["train_loss", "val_loss"]].to_numpy(dtype=float)
    losses = losses[np.isfinite(losses) & (losses > 0)]
    # Early epochs (warm-up, frozen backbone) can sit 10-100x above the rest; a log axis keeps
    # the later epochs, where over- and underfitting show, readable.
    if len(losses) and losses.max() / losses.min() > 10:
        ax_loss.set_yscale("log")
        ax_loss.set_ylabel("loss (training objective, log scale)")
    else:
        ax_loss.set_ylabel("loss (training objective)")
    ax_loss.set_title("Train and val loss", fontsize=10)
    ax_loss.legend(loc="upper right", fontsize=8, framealpha=0.9)

    _plot_series(ax_map, x, history["val_map50"], color=MAP_COLOR, label="mAP@0.5")
    _plot_series(ax_map, x, history["val_map50_95"], color=MAP95_COLOR, label="mAP@[.5:.95]")
    _plot_series(ax_map, x, history["val_precision"], color=PRECISION_COLOR, label="precision", linestyle="--",
                 alpha=0.8)
    _plot_series(ax_map, x, history["val_recall"], color=RECALL_COLOR, label="recall", linestyle="--", alpha=0.8)
    maps = history.dropna(subset=["val_map50"])
    if best_epoch is not None and len(maps) and (maps["epoch"] == best_epoch).any():
        best = float(maps.loc[maps["epoch"] == best_epoch, "val_map50"].iloc[0])
        ax_map.plot([best_epoch], [best], marker="*", markersize=14, color=BEST_COLOR, zorder=5)
        # Label to the left of the star, clear of the dotted best-epoch line.
        ax_map.annotate(f"best {best:.3f}", (best_epoch, best), textcoords="offset points",
                        xytext=(-10, -4), ha="right", va="top", fontsize=8, color=BEST_COLOR,
                        bbox=dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor="none", alpha=0.8))
    ax_map.set_ylim(0, 1.02)
    ax_map.set_ylabel("val score (0–1)")
    ax_map.set_title("Validation mAP50 (picks the best epoch), mAP50-95, precision and recall at best F1",
                     fontsize=10)
    # Lower right is where the curves start (low) early in training, so the legend stays clear of
    # the best-epoch label near the end of the run.
    ax_map.legend(loc="lower right", fontsize=8, framealpha=0.9, ncol=2)

    rel = (history["val_loss"] - history["train_loss"]) / history["train_loss"].abs().clip(lower=1e-12)
    _plot_series(ax_gap, x, rel, color="#444444", label="(val − train) / train")
    ax_gap.axhline(0, color="black", linewidth=0.8)
    if gap_ratio is not None:
        ax_gap.axhline(gap_ratio, color=VAL_COLOR, linestyle="--", linewidth=1,
                       label=f"overfitting threshold ({gap_ratio:g})")
    ax_gap.set_ylabel("relative gap")
    ax_gap.set_title("Generalisation gap", fontsize=10)
    ax_gap.legend(loc="best", fontsize=8, framealpha=0.9)
    ax_gap.set_xlabel("epoch (global: frozen phase, then unfrozen)")
    _integer_ticks(ax_gap, x)
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path


def _integer_ticks(ax: plt.Axes, x: pd.Series) -> None:
    lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
    ax.set_xlim(lo - 0.6, hi + 0.6)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True, nbins=20))

"""Figures of the map stage: PR curve per class, P/R/F1 against confidence, confusion matrix.

Agg backend, one colour per class from detpipe.colors, layouts that stay legible with 20 classes
(legends outside the axes, matrix cells annotated only when they fit).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .colors import class_color_mpl  # noqa: E402


def plot_pr_curve(path: str | Path, class_name: str, class_index: int, recall: np.ndarray,
                  precision: np.ndarray, ap: float, min_overlap: float, convention: str) -> None:
    """Raw PR points and the interpolated envelope whose area is the AP."""
    fig, ax = plt.subplots(figsize=(5, 4.2), dpi=110)
    color = class_color_mpl(class_index)
    if len(recall):
        mrec = np.r_[0.0, recall, 1.0]
        mpre = np.maximum.accumulate(np.r_[0.0, precision, 0.0][::-1])[::-1]
        ax.fill_between(mrec, 0, mpre, step="pre", color=color, alpha=0.2, label="interpolated (AP area)")
        ax.plot(recall, precision, color=color, lw=1.5, label="precision")
    ap_text = "no ground truth" if np.isnan(ap) else f"AP{int(round(min_overlap * 100))} = {ap:.3f}"
    ax.set(xlim=(0, 1), ylim=(0, 1.05), xlabel="recall", ylabel="precision",
           title=f"{class_name}: {ap_text}\n({convention})")
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_prf_confidence(path: str | Path, curve: dict, class_names: list[str], has_gt: np.ndarray,
                        confidence: float, at_conf: dict) -> None:
    """Precision, recall and F1 against confidence: thin lines per class, thick for all classes,
    the value at `confidence` (predict.confidence) marked."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), dpi=100, sharex=True)
    x = curve["confidence"]
    for ax, key in zip(axes, ("precision", "recall", "f1")):
        for k, name in enumerate(class_names):
            if has_gt[k]:
                ax.plot(x, curve[key][k], color=class_color_mpl(k), lw=0.9, alpha=0.8, label=name)
        ax.plot(x, curve["all_" + key], color="black", lw=2.5, label="all classes")
        ax.axvline(confidence, color="gray", ls="--", lw=1)
        ax.plot([confidence], [at_conf[key]], "o", color="red", ms=7, zorder=5)
        ax.annotate(f"{at_conf[key]:.3f} @ {confidence:g}", (confidence, at_conf[key]),
                    xytext=(6, 6), textcoords="offset points", fontsize=9, color="red")
        ax.set(xlim=(0, 1), ylim=(0, 1.05), xlabel="confidence", ylabel=key, title=f"{key} vs confidence")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
               ncol=1 if len(labels) <= 22 else 2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def plot_confusion(path: str | Path, matrix: np.ndarray, class_names: list[str],
                   confidence: float, iou: float) -> None:
    """Counts (colour = share of the true row) with background as the last row and column."""
    names = list(class_names) + ["background"]
    n = len(names)
    size = max(5.0, 0.45 * n + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1, size), dpi=100)
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape, float), where=rows > 0)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of true row")
    font = 9 if n <= 12 else 7 if n <= 22 else 0
    if font:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=font,
                            color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    for k, tick in enumerate(ax.get_yticklabels()[:-1]):
        tick.set_color(class_color_mpl(k))
    ax.set(xlabel="predicted", ylabel="true",
           title=f"confusion matrix (score >= {confidence:g}, IoU >= {iou:g}; background = miss / false positive)")
    ax.title.set_fontsize(9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

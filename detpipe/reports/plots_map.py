"""Figures of the map stage: PR curve per class, P/R/F1 against confidence, confusion matrix.

Agg backend, one colour per class from detpipe.colors, layouts that stay legible with 20 classes
(legends outside the axes, matrix cells annotated only when they fit). One figure per kind, never
one per class, with fixed layouts (no tight_layout / bbox_inches="tight", which draw twice): the
three figures of a 20-class evaluation take a fraction of a second.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..colors import class_color_mpl  # noqa: E402
from ..metrics.curves import pr_envelopes  # noqa: E402

BEST_F1_COLOR = "#9467bd"


def plot_pr_curves(path: str | Path, class_names: list[str], voc, convention: str) -> None:
    """One figure for all classes: each class's interpolated PR curve (its area is the class AP)
    and their mean over classes with ground truth, whose area is the mAP."""
    fig = plt.figure(figsize=(9, 5.6), dpi=100)
    ax = fig.add_axes((0.08, 0.1, 0.58, 0.8))
    grid = np.linspace(0, 1, 501)
    ks, curves, mean = pr_envelopes(voc, grid)
    for k, curve in zip(ks, curves):
        ax.plot(grid, curve, color=class_color_mpl(k), lw=1, alpha=0.85,
                label=f"{class_names[k][:24]} {voc.ap[k]:.3f}")
    if mean is not None:
        ax.plot(grid, mean, color="black", lw=2.5, label=f"all classes {voc.map:.3f} mAP")
    ax.set(xlim=(0, 1), ylim=(0, 1.05), xlabel="recall", ylabel="precision",
           title=f"Precision-recall per class ({convention})")
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles[::-1], labels[::-1], loc="center left", bbox_to_anchor=(0.68, 0.5), fontsize=8,
               ncol=1 if len(labels) <= 26 else 2, frameon=False, title="class AP")
    fig.savefig(path)
    plt.close(fig)


def plot_prf_confidence(path: str | Path, curve: dict, class_names: list[str], has_gt: np.ndarray,
                        confidence: float, at_conf: dict, best: dict) -> None:
    """Precision, recall and F1 against confidence: thin lines per class, thick for all classes,
    the value at `confidence` (predict.confidence) marked, and the confidence of best pooled F1
    (`best`, from `metrics.curves.best_f1`): a star on the F1 panel, a dotted line on all three."""
    fig, axes = plt.subplots(1, 3, figsize=(16.5, 4.6), dpi=100, sharex=True)
    fig.subplots_adjust(left=0.04, right=0.86, bottom=0.12, top=0.91, wspace=0.22)
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
        ax.axvline(best["confidence"], color=BEST_F1_COLOR, ls=":", lw=1.2)
        if key == "f1":
            ax.plot([best["confidence"]], [best["f1"]], "*", color=BEST_F1_COLOR, ms=14, zorder=6)
            ax.annotate(f"best F1 {best['f1']:.3f} @ {best['confidence']:.3f}", (best["confidence"], best["f1"]),
                        xytext=(8, -16), textcoords="offset points", fontsize=9, color=BEST_F1_COLOR,
                        bbox=dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor="none", alpha=0.85))
        ax.set(xlim=(0, 1), ylim=(0, 1.05), xlabel="confidence", ylabel=key, title=f"{key} vs confidence")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(0.865, 0.5), fontsize=8,
               ncol=1 if len(labels) <= 22 else 2, frameon=False)
    fig.savefig(path)
    plt.close(fig)


def plot_confusion(path: str | Path, matrix: np.ndarray, class_names: list[str],
                   confidence: float, iou: float) -> None:
    """Counts (colour = share of the true row) with background as the last row and column."""
    names = [c[:28] for c in class_names] + ["background"]
    n = len(names)
    cell = max(3.5, 0.45 * n + 1.0)  # inches of matrix
    label = 0.3 + 0.062 * max(len(c) for c in names)  # inches for 8 pt tick labels (60° below)
    width, height = label + 0.6 + cell + 1.3, 0.45 + cell + 0.866 * label + 0.5
    fig = plt.figure(figsize=(width, height), dpi=100)
    ax = fig.add_axes(((label + 0.6) / width, (0.866 * label + 0.5) / height, cell / width, cell / height))
    cax = fig.add_axes(((label + 0.6 + cell + 0.2) / width, (0.866 * label + 0.5) / height, 0.18 / width,
                        cell / height))
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape, float), where=rows > 0)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, cax=cax, label="share of true row")
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
           title=f"confusion matrix (score >= {confidence:g}, IoU >= {iou:g})\nbackground = miss / false positive")
    ax.title.set_fontsize(9)
    fig.savefig(path)
    plt.close(fig)

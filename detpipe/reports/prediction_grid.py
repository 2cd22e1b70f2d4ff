"""Sample predictions drawn on images: single images (PIL) and a TP / FP / miss grid (matplotlib).

In the grid a true positive is a solid box in its class colour with name and score, a false
positive a red dashed box, and a missed ground-truth object a white dashed box, so the three
read apart at a glance on any background.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.legend_handler import HandlerTuple  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from detpipe.colors import class_color, class_color_mpl  # noqa: E402
from detpipe.metrics.voc import match_image  # noqa: E402

FP_COLOR = "#ff1f1f"
MISS_COLOR = "#ffffff"
TILE_ASPECT = 4 / 3


def _name(class_names: Sequence[str], label: int) -> str:
    return class_names[label] if 0 <= label < len(class_names) else f"class {label}"


def _text_color(rgb: tuple[float, float, float]) -> str:
    """Black on light backgrounds, white on dark (relative luminance)."""
    r, g, b = rgb
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else "white"


# --------------------------------------------------------------------------- single image (PIL)

def draw_detections(rgb: np.ndarray, boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray | None,
                    class_names: Sequence[str]) -> Image.Image:
    """Boxes (xyxy pixels) in their class colour with "name score" tags; returns a new image."""
    img = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).convert("RGB")
    draw = ImageDraw.Draw(img)
    h, w = rgb.shape[:2]
    width = max(2, round(max(h, w) / 250))
    font = ImageFont.load_default(size=max(11, round(max(h, w) / 45)))
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
    labels = np.asarray(labels, dtype=int).reshape(-1)
    scores = np.ones(len(labels)) if scores is None else np.asarray(scores, dtype=float).reshape(-1)
    # Lowest score first so the most confident box and tag end up on top.
    for i in np.argsort(scores, kind="stable"):
        x1, y1, x2, y2 = boxes[i]
        color = class_color(int(labels[i]))
        draw.rectangle([x1, y1, x2, y2], outline=color, width=width)
        tag = f"{_name(class_names, int(labels[i]))} {scores[i]:.2f}"
        tx0, ty0, tx1, ty1 = draw.textbbox((0, 0), tag, font=font)
        tw, th = tx1 - tx0 + 6, ty1 - ty0 + 4
        ty = y1 - th if y1 - th >= 0 else y1  # inside the box when it touches the top edge
        tx = min(max(x1, 0), max(w - tw, 0))
        draw.rectangle([tx, ty, tx + tw, ty + th], fill=color)
        fg = (0, 0, 0) if _text_color(tuple(c / 255 for c in color)) == "black" else (255, 255, 255)
        draw.text((tx + 3 - tx0, ty + 2 - ty0), tag, fill=fg, font=font)
    return img


# --------------------------------------------------------------------------- matching

def match(gt_boxes: np.ndarray, gt_labels: np.ndarray, pred_boxes: np.ndarray, pred_labels: np.ndarray,
          pred_scores: np.ndarray, iou: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Hits and misses exactly as the VOC mAP counts them (one matching: metrics.voc.match_image),
    so the grid never disagrees with the score. Returns (pred_is_tp [P] bool, gt_is_found [G] bool)."""
    return match_image({"boxes": gt_boxes, "labels": gt_labels},
                       {"boxes": pred_boxes, "labels": pred_labels, "scores": pred_scores}, iou)


def _unpack(item: Any, n: int) -> list[np.ndarray]:
    """(boxes, labels[, scores]) from a tuple, a dict or an object with those attributes."""
    keys = ("boxes", "labels", "scores")[:n]
    if isinstance(item, dict):
        vals = [item.get(k) for k in keys]
    elif hasattr(item, "boxes"):
        vals = [getattr(item, k, None) for k in keys]
    else:
        vals = list(item)[:n] + [None] * max(0, n - len(item))
    boxes = np.asarray(vals[0] if vals[0] is not None else [], float).reshape(-1, 4)
    out = [boxes, np.asarray(vals[1] if vals[1] is not None else [], int).reshape(-1)]
    if n == 3:
        out.append(np.ones(len(boxes)) if vals[2] is None else np.asarray(vals[2], float).reshape(-1))
    return out


# --------------------------------------------------------------------------- grid (matplotlib)

def _tag(ax: plt.Axes, x: float, y: float, text: str, face: Any, fg: str, top: float) -> None:
    # Above the box, or just inside it when the box touches the top of the image.
    inside = y - top < 14
    ax.text(x, y, text, fontsize=6.5, color=fg, va="top" if inside else "bottom", ha="left",
            bbox=dict(boxstyle="square,pad=0.15", facecolor=face, edgecolor="none", alpha=0.9),
            clip_on=True, zorder=6)


def _fix_tile_aspect(ax: plt.Axes, h: int, w: int, aspect: float = TILE_ASPECT) -> None:
    """Show every image inside the same width:height frame (grey margins), so tiles of
    different shapes line up and their titles never run into the row above."""
    if w / h > aspect:
        half = w / aspect / 2
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h / 2 + half, h / 2 - half)
    else:
        half = h * aspect / 2
        ax.set_xlim(w / 2 - half, w / 2 + half)
        ax.set_ylim(h - 0.5, -0.5)
    ax.set_facecolor("#d9d9d9")
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_tile(ax: plt.Axes, rgb: np.ndarray, gt: Any, pred: Any, class_names: Sequence[str],
               iou: float, title: str | None) -> tuple[set[int], tuple[int, int, int]]:
    gb, gl = _unpack(gt, 2)
    pb, pl, ps = _unpack(pred, 3)
    tp, found = match(gb, gl, pb, pl, ps, iou)
    ax.imshow(rgb)
    _fix_tile_aspect(ax, *rgb.shape[:2])
    for (x1, y1, x2, y2), lab in zip(gb[~found], gl[~found]):
        # A black line under the white dash keeps misses visible on bright images.
        for color, lw, ls in (("black", 2.6, "-"), (MISS_COLOR, 1.6, (0, (4, 3)))):
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, lw=lw, ls=ls, zorder=4))
        _tag(ax, x1, y2 + 1, f"miss: {_name(class_names, int(lab))}", "white", "black", top=-1e9)
    order = np.argsort(ps, kind="stable")
    for i in order:
        x1, y1, x2, y2 = pb[i]
        name = _name(class_names, int(pl[i]))
        if tp[i]:
            color = class_color_mpl(int(pl[i]))
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, lw=2.2, zorder=5))
            _tag(ax, x1, y1, f"{name} {ps[i]:.2f}", color, _text_color(color), top=0)
        else:
            # Red dashes over black: dashed where every true positive is solid, even for a
            # class whose own colour is red.
            for color, lw, ls in (("black", 2.6, "-"), (FP_COLOR, 1.8, (0, (4, 3)))):
                ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, lw=lw,
                                       ls=ls, zorder=5))
            _tag(ax, x1, y1, f"FP: {name} {ps[i]:.2f}", FP_COLOR, "white", top=0)
    counts = (int(tp.sum()), int((~tp).sum()), int((~found).sum()))
    head = f"TP {counts[0]} · FP {counts[1]} · miss {counts[2]}"
    ax.set_title(f"{title}\n{head}" if title else head, fontsize=8)
    return set(gl.tolist()) | set(pl.tolist()), counts


def draw_prediction_grid(images: Sequence[tuple], class_names: Sequence[str], out_path: str | Path,
                         iou: float = 0.5, titles: Sequence[str] | None = None, columns: int = 4) -> Path:
    """Grid of (rgb uint8 [H,W,3], gt, pred) with TP / FP / miss drawn distinctly, and a legend.

    gt is (boxes, labels) and pred (boxes, labels, scores) — tuples, dicts or objects with those
    attributes; boxes xyxy in the image's pixels. Matching is greedy by score at IoU >= `iou`.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    n = max(len(images), 1)
    cols = min(columns, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.8 * cols, 3.4 * rows + 1.0), squeeze=False)
    seen: set[int] = set()
    totals = np.zeros(3, dtype=int)
    for k, ax in enumerate(axes.ravel()):
        if k >= len(images):
            ax.axis("off")
            if not images and k == 0:
                ax.text(0.5, 0.5, "no images", ha="center", va="center", transform=ax.transAxes)
            continue
        rgb, gt, pred = images[k][:3]
        classes, counts = _draw_tile(ax, rgb, gt, pred, class_names, iou, titles[k] if titles else None)
        seen |= classes
        totals += counts
    handles = [
        Line2D([], [], color="#555555", lw=2.2, label="true positive (class colour)"),
        (Line2D([], [], color="black", lw=2.6), Line2D([], [], color=FP_COLOR, lw=1.8, ls=(0, (4, 3)))),
        (Line2D([], [], color="black", lw=2.6), Line2D([], [], color=MISS_COLOR, lw=1.6, ls=(0, (4, 3)))),
    ] + [Patch(color=class_color_mpl(c)) for c in sorted(seen)]
    labels = ["true positive (class colour)", "false positive", "missed ground truth"] + \
        [_name(class_names, c) for c in sorted(seen)]
    fig.suptitle(f"Sample test predictions (IoU ≥ {iou:g}): TP {totals[0]}, FP {totals[1]}, "
                 f"missed {totals[2]}", fontsize=11)
    ncol = min(len(handles), max(3, cols * 2))
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=7.5, frameon=False,
               handler_map={tuple: HandlerTuple(ndivide=1)}, handlelength=3)
    legend_rows = int(np.ceil(len(handles) / ncol))
    fig.tight_layout(rect=(0, 0.025 + 0.035 * legend_rows / rows, 1, 0.97))
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path

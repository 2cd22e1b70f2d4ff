"""Split statistics, the "markedly different split" flag, and the comparison figure.

Box sizes use the COCO area ranges of the mAP stage (detpipe.sizes.AREA_RNG) on the box area
in original pixels. COCO's ranges share their ends (a box of area exactly 32² is both small and
medium there); a histogram needs one bucket per box, so an area on an end goes to the lower one:
small ≤ 32² < medium ≤ 96² < large. A split is flagged when its class mix or its box-size mix differs from
train's by more than `split.max_shift` in total-variation distance (half the L1 distance between
the two distributions: 0 = identical, 1 = disjoint) — the "easy images in train, hard ones in
val" mistake shows up as a size-mix shift.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from detpipe.artifacts.split_report import ObjectScale, SplitComparison, SplitStats
from detpipe.colors import class_color_mpl
from detpipe.data.annotations import Record
from detpipe.sizes import AREA_NAMES, AREA_RNG

SIZE_NAMES = AREA_NAMES[1:]                         # ("small", "medium", "large"), without "all"
SMALL_AREA, LARGE_AREA = AREA_RNG[1][1], AREA_RNG[2][1]
MIN_OBJECTS_TO_COMPARE = 20


def size_bucket_counts(records: Sequence[Record]) -> list[int]:
    """Counts of small / medium / large boxes (COCO area ranges, an area on a shared end in the lower)."""
    boxes = np.concatenate([r.boxes for r in records]) if records else np.zeros((0, 4))
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return [int((area <= SMALL_AREA).sum()), int(((area > SMALL_AREA) & (area <= LARGE_AREA)).sum()),
            int((area > LARGE_AREA).sum())]


def object_scale(records: Sequence[Record], longer: Mapping[str, int | None]) -> ObjectScale:
    """Medians of √(w·h) / the image's longer side (`longer`: path -> pixels, None when unknown:
    those images' objects are left out and not counted in `objects`)."""
    rows = [(r.boxes, longer[r.path]) for r in records if len(r) and longer.get(r.path)]
    boxes = np.concatenate([b for b, _ in rows]) if rows else np.zeros((0, 4))
    side = np.concatenate([np.full(len(b), float(n)) for b, n in rows]) if rows else np.zeros(0)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    frac = np.sqrt(np.clip(area, 0, None)) / side
    small = frac[area <= SMALL_AREA]
    median = lambda v: round(float(np.median(v)), 6) if len(v) else None  # noqa: E731
    return ObjectScale(objects=len(frac), median=median(frac), small_objects=len(small), median_small=median(small))


def split_stats(records: Sequence[Record], classes: Sequence[str], longer: Mapping[str, int | None]) -> SplitStats:
    """Images, objects, per-class object and image counts, box sizes of one split (`longer`: each
    image's longer side in pixels, see `object_scale`)."""
    labels = np.concatenate([r.labels for r in records]) if records else np.zeros(0, dtype=int)
    objects = np.bincount(labels, minlength=len(classes))
    images = np.zeros(len(classes), dtype=int)
    for r in records:
        images[np.unique(r.labels)] += 1
    return SplitStats(
        images=len(records),
        objects=int(len(labels)),
        images_without_objects=sum(1 for r in records if len(r) == 0),
        difficult=int(sum(r.difficult.sum() for r in records)),
        class_objects={c: int(objects[i]) for i, c in enumerate(classes)},
        class_images={c: int(images[i]) for i, c in enumerate(classes)},
        box_sizes=dict(zip(SIZE_NAMES, size_bucket_counts(records))),
        object_scale=object_scale(records, longer),
    )


def total_variation(a: Sequence[float], b: Sequence[float]) -> float:
    """Half the L1 distance between two count vectors normalised to distributions (0 if empty)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.sum() == 0 or b.sum() == 0:
        return 0.0
    return float(0.5 * np.abs(a / a.sum() - b / b.sum()).sum())


def compare_splits(stats: dict[str, SplitStats], max_shift: float) -> dict[str, SplitComparison]:
    """Per non-train split: class and size shift against train, and a flag with its reason."""
    out = {}
    train = stats["train"]
    for name, st in stats.items():
        if name == "train":
            continue
        cls = total_variation(list(st.class_objects.values()), list(train.class_objects.values()))
        size = total_variation(list(st.box_sizes.values()), list(train.box_sizes.values()))
        enough = min(st.objects, train.objects) >= MIN_OBJECTS_TO_COMPARE
        reasons = [f"{what} mix differs from train by {v:.2f} > {max_shift:g}"
                   for what, v in (("class", cls), ("box-size", size)) if enough and v > max_shift]
        out[name] = SplitComparison(class_shift=round(cls, 4), size_shift=round(size, 4), flagged=bool(reasons),
                                    reason="; ".join(reasons) if enough else
                                    f"fewer than {MIN_OBJECTS_TO_COMPARE} objects; not compared")
    return out


def _bars(ax, groups: Sequence[str], series: dict[str, list[float]], colors: list, title: str, ylabel: str) -> None:
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(groups))
    for k, (label, values) in enumerate(series.items()):
        ax.bar(x + (k - (len(series) - 1) / 2) * width, values, width, label=label, color=colors[k],
               edgecolor="black", linewidth=0.4)
    ax.set_xticks(x, groups)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    top = max((max(v) for v in series.values() if len(v)), default=1.0)
    ax.set_ylim(0, max(top, 1e-9) * 1.3)  # headroom so the legend never hides a bar
    ax.legend(fontsize=8, ncol=len(series), loc="upper center")


def plot_splits(stats: dict[str, SplitStats], comparison: dict[str, SplitComparison], classes: Sequence[str], path: str | Path) -> None:
    """Two panels: share of objects per class per split (class colours), and box-size shares."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(stats)
    flagged = [n for n in names if n in comparison and comparison[n].flagged]
    labels = [f"{n}{' (FLAGGED)' if n in flagged else ''}\n{stats[n].images} img" for n in names]
    share = lambda d: np.asarray(list(d.values()), float) / max(sum(d.values()), 1)  # noqa: E731
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    by_class = {c: [share(stats[n].class_objects)[i] for n in names] for i, c in enumerate(classes)}
    _bars(left, labels, by_class, [class_color_mpl(i) for i in range(len(classes))],
          "Class mix per split", "share of the split's objects")
    by_size = {s: [share(stats[n].box_sizes)[i] for n in names] for i, s in enumerate(SIZE_NAMES)}
    _bars(right, labels, by_size, ["0.85", "0.55", "0.25"], "Box sizes per split (COCO area)",
          "share of the split's boxes")
    fig.suptitle("Split distributions" + (f" — differs markedly: {', '.join(flagged)}" if flagged else ""))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)

"""reports/index.md: the one page a person opens first.

Every section reads its inputs defensively: a missing or unreadable file gives a line saying
what is missing and which stage writes it, never a crash. Links and images are relative to the
index so the page reads the same on GitHub, in a local Markdown viewer and offline.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ..artifacts.history import read_history
from ..artifacts.metrics import COCO_STATS, ArtifactError, Headline, MapInfo, MapMetrics, Prf


@dataclass
class Inputs:
    """Where each input lives; defaults follow the layout under the reports folder."""

    reports: Path
    annotate: Path | None = None
    split: Path | None = None
    split_png: Path | None = None
    frozen: Path | None = None
    unfrozen: Path | None = None
    overfit_json: Path | None = None
    overfit_md: Path | None = None
    overfit_png: Path | None = None
    metrics: Path | None = None
    map_info: Path | None = None
    pr_dir: Path | None = None
    confusion: Path | None = None
    predictions: Path | None = None
    predict_summary: Path | None = None

    def __post_init__(self) -> None:
        r = Path(self.reports)
        # First existing candidate wins, else the first is reported as missing.
        defaults = {
            "annotate": ["data/annotate.json"], "split": ["data/split.json"],
            "split_png": ["data/split.png"], "frozen": ["train/frozen.tsv"],
            "unfrozen": ["train/unfrozen.tsv"], "overfit_json": ["overfitting.json"],
            "overfit_md": ["overfitting.md"], "overfit_png": ["overfitting.png"],
            "metrics": ["map/metrics.json"], "map_info": ["map/info.json"], "pr_dir": ["map/pr"],
            "confusion": ["map/confusion_matrix.png", "map/figures/confusion_matrix.png"],
            "predictions": ["predictions"],
            "predict_summary": ["predict.json", "predictions/summary.json"],
        }
        for key, candidates in defaults.items():
            value = getattr(self, key)
            if value is None:
                value = next((r / c for c in candidates if (r / c).exists()), r / candidates[0])
            setattr(self, key, Path(value))


# --------------------------------------------------------------------------- helpers

def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def load(read: Callable[[Path], Any], path: Path) -> tuple[Any, str | None]:
    """(content, None) through a contract's reader, or (None, why not: None for a missing file,
    else the contract's one-line error)."""
    if not Path(path).is_file():
        return None, None
    try:
        return read(path), None
    except (OSError, ArtifactError) as exc:
        return None, str(exc)


def unreadable(what: str, why: str) -> str:
    return f"_Unreadable: {what}: {why}._"


def read_tsv(path: Path) -> pd.DataFrame | None:
    """A training history with at least one epoch, else None."""
    frame, _ = load(read_history, path)
    return frame if frame is not None and len(frame) else None


def rel(target: Path, out_dir: Path) -> str:
    """Link from the index to `target`, POSIX separators, spaces escaped for Markdown."""
    return Path(os.path.relpath(Path(target).resolve(), Path(out_dir).resolve())).as_posix().replace(" ", "%20")


def num(v: Any, digits: int = 3) -> str:
    if isinstance(v, bool) or v is None:
        return "–" if v is None else str(v)
    if isinstance(v, (int, float)):
        if isinstance(v, float) and not math.isfinite(v):
            return "–"
        return str(v) if isinstance(v, int) else f"{v:.{digits}f}"
    return str(v)


def duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def missing(what: str, path: Path, out_dir: Path, stage: str) -> str:
    return f"_Missing: {what} (`{rel(path, out_dir)}`, written by the `{stage}` stage)._"


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return out


def pick(d: Any, *keys: str) -> Any:
    """First present key of a mapping; dotted keys walk nested mappings."""
    for key in keys:
        cur = d
        for part in key.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        if cur is not None:
            return cur
    return None


def image(path: Path, out_dir: Path, alt: str, width: str | None = None) -> str:
    if width:
        return f'<img src="{rel(path, out_dir)}" alt="{alt}" width="{width}">'
    return f"![{alt}]({rel(path, out_dir)})"


def _count(v: Any) -> Any:
    """A count given as a number, a list (its length) or a mapping with a count field."""
    if isinstance(v, list):
        return len(v)
    if isinstance(v, dict):
        return pick(v, "objects", "count", "n", "boxes", "instances", "images")
    return v


def per_class_counts(d: Any) -> dict[str, dict[str, Any]]:
    """{class: {"objects": n, "images": n, "difficult": n}} from the shapes a report may use."""
    raw = pick(d, "per_class", "classes", "class_counts", "objects_per_class", "class_objects",
               "counts", "objects.per_class")
    out: dict[str, dict[str, Any]] = {}
    if isinstance(raw, dict):
        for name, v in raw.items():
            if isinstance(v, dict):
                out[str(name)] = {"objects": pick(v, "objects", "count", "boxes", "instances"),
                                  "images": pick(v, "images"), "difficult": pick(v, "difficult")}
            elif isinstance(v, (int, float)):
                out[str(name)] = {"objects": v}
    elif isinstance(raw, list):
        for v in raw:
            if isinstance(v, dict) and pick(v, "name", "class") is not None:
                out[str(pick(v, "name", "class"))] = {
                    "objects": pick(v, "objects", "count", "boxes"), "images": pick(v, "images"),
                    "difficult": pick(v, "difficult")}
    for key, extra in (("images", ("class_images", "images_per_class")),
                       ("difficult", ("class_difficult", "difficult_per_class"))):
        more = pick(d, *extra)
        if isinstance(more, dict):
            for name, v in more.items():
                out.setdefault(str(name), {})[key] = v
    return out


def _kept(d: dict, key: str) -> tuple[Any, Any]:
    """(kept, skipped-by-reason) for "images"/"objects" given as a number or as
    {"in", "kept", "skipped": {reason: n}} (the annotate stage's shape)."""
    v = d.get(key)
    if isinstance(v, dict):
        kept = pick(v, "kept", "count", "n")
        return (kept if kept is not None else v.get("in")), v.get("skipped")
    return _count(v if v is not None else pick(d, f"n_{key}", f"num_{key}", f"{key}_kept")), None


def _skipped(pair: tuple[Any, Any]) -> str:
    skipped = pair[1]
    if not isinstance(skipped, dict) or not sum(v for v in skipped.values() if isinstance(v, (int, float))):
        return ""
    return " (skipped: " + ", ".join(f"{k} {v}" for k, v in skipped.items()) + ")"


# --------------------------------------------------------------------------- sections

Section = Callable[[Inputs, Path], list[str]]


def section_dataset(inp: Inputs, out_dir: Path) -> list[str]:
    lines = ["## Dataset", ""]
    d = read_json(inp.annotate)
    if d is None:
        return lines + [missing("dataset summary", inp.annotate, out_dir, "annotate"), ""]
    images, objects = _kept(d, "images"), _kept(d, "objects")
    empty = pick(d, "images.without_objects") if isinstance(d.get("images"), dict) else None
    empty = empty if empty is not None else _count(pick(d, "images_without_objects", "without_objects"))
    warnings = pick(d, "warnings") or []
    facts = [f"**{num(images[0])}** images" + _skipped(images), f"**{num(objects[0])}** objects" + _skipped(objects),
             f"**{num(empty)}** images without objects", f"**{_count(warnings) or 0}** warnings"]
    lines += [" · ".join(facts) + f" ([annotate.json]({rel(inp.annotate, out_dir)}))", ""]
    kinds = pick(d, "warning_counts")
    if isinstance(kinds, dict) and kinds:
        lines += ["Warnings by kind: " + ", ".join(f"{k} {v}" for k, v in kinds.items()) + ".", ""]
    counts = per_class_counts(d)
    if counts:
        rows = [[name, num(c.get("objects")), num(c.get("images")), num(c.get("difficult"))]
                for name, c in counts.items()]
        lines += table(["class", "objects", "images", "difficult"], rows) + [""]
    if isinstance(warnings, list) and warnings:
        shown = f"first 20 of {len(warnings)}" if len(warnings) > 20 else str(len(warnings))
        lines += [f"<details><summary>Warnings ({shown})</summary>", ""]
        for w in warnings[:20]:
            text = pick(w, "message", "text") if isinstance(w, dict) else w
            lines.append(f"- {text}")
        lines += ["", "</details>", ""]
    return lines


def section_split(inp: Inputs, out_dir: Path) -> list[str]:
    from detpipe.reports.overfit.checks import split_shift, split_stats  # the same reading the verdict uses

    lines = ["## Split check", ""]
    d = read_json(inp.split)
    if d is None:
        lines += [missing("split report", inp.split, out_dir, "split"), ""]
    else:
        stats = split_stats(d)
        comparison = d.get("comparison") if isinstance(d.get("comparison"), dict) else {}
        buckets = list(dict.fromkeys(k for s in stats.values() for k in (s.get("size_counts") or {})))
        rows = []
        for name, s in stats.items():
            c = comparison.get(name) or {}
            flag = ("**flagged**: " + str(c.get("reason", "")) if c.get("flagged") else
                    f"class shift {num(c.get('class_shift'), 2)}, size shift {num(c.get('size_shift'), 2)}"
                    if c else ("reference" if name == "train" else "–"))
            rows.append([name, num(s["images"]), num(s["objects"])]
                        + [num((s.get("size_counts") or {}).get(b)) for b in buckets] + [flag])
        if rows:
            lines += table(["split", "images", "objects"] + [f"{b} boxes" for b in buckets]
                           + ["vs train (total variation)"], rows) + [""]
        names = list(dict.fromkeys(c for s in stats.values() for c in (s.get("class_counts") or {})))
        if names:
            lines += ["Objects per class and split:", ""]
            lines += table(["class"] + list(stats), [[c] + [num((s.get("class_counts") or {}).get(c))
                                                          for s in stats.values()] for c in names]) + [""]
        shift = split_shift(stats)
        if shift["class_tv_distance"] is None and rows:
            lines += ["_The split report has no per-class counts to compare._", ""]
        lines += [f"Details: [split.json]({rel(inp.split, out_dir)}).", ""]
    if inp.split_png.is_file():
        lines += [image(inp.split_png, out_dir, "Class and box-size distributions per split"), ""]
    else:
        lines += [missing("split distribution plot", inp.split_png, out_dir, "split"), ""]
    return lines


def _train_summary(frame: pd.DataFrame | None) -> dict[str, Any]:
    if frame is None:
        return {}
    last = frame.iloc[-1]
    return {"epochs": len(frame), "seconds": float(frame["seconds"].sum()),
            "train_loss": float(last["train_loss"]), "val_loss": float(last["val_loss"]),
            "val_map50": float(last["val_map50"]), "val_map50_95": float(last["val_map50_95"]),
            "images_per_s": float(frame["images_per_s"].mean())}


def section_training(inp: Inputs, out_dir: Path) -> list[str]:
    lines = ["## Training", ""]
    rows = []
    for phase, path in (("frozen", inp.frozen), ("unfrozen", inp.unfrozen)):
        frame, why = load(read_history, path)
        s = _train_summary(frame if frame is not None and len(frame) else None)
        if not s:
            lines.append(unreadable(f"{phase}-phase history", why) if why
                         else missing(f"{phase}-phase history", path, out_dir, f"train_{phase}"))
            continue
        rows.append([f"[{phase}]({rel(path, out_dir)})", s["epochs"], num(s["train_loss"]),
                     num(s["val_loss"]), num(s["val_map50"]), num(s["val_map50_95"]), num(s["images_per_s"], 1),
                     duration(s["seconds"])])
    if rows:
        if lines[-1] != "":
            lines.append("")
        lines += table(["phase", "epochs", "final train loss", "final val loss", "final val mAP50",
                        "final val mAP50-95", "images/s", "time"], rows)
    lines.append("")
    if inp.overfit_png.is_file():
        lines += [image(inp.overfit_png, out_dir, "Training curves: train/val loss, val mAP50 and gap per epoch"), ""]
    else:
        lines += [missing("training curves", inp.overfit_png, out_dir, "overfit"), ""]
    return lines


def _signed(v: Any) -> str:
    if not isinstance(v, (int, float)) or not math.isfinite(v):
        return "–"
    return f"{v:+.2f}".replace("-0.00", "+0.00")


def section_verdict(inp: Inputs, out_dir: Path) -> list[str]:
    lines = ["## Is the model overfitting?", ""]
    d = read_json(inp.overfit_json)
    if d is None:
        return lines + [missing("overfitting verdict", inp.overfit_json, out_dir, "overfit"), ""]
    reason = d.get("reason")
    reason = " ".join(map(str, reason)) if isinstance(reason, list) else str(reason or "")
    lines += [f"**{str(d.get('verdict', '?')).capitalize()}** — {reason}.", ""]
    gap = d.get("gap") or {}
    lines += [f"Best epoch {num(d.get('best_epoch'))} (val mAP50 {num(d.get('best_val_map50'))}); "
              f"relative gap (val − train) / train now {num(gap.get('final_relative'), 2)}, "
              f"change over the last {gap.get('last_k', '?')} epochs {_signed(gap.get('change_relative_last_k'))}.", ""]
    advice = d.get("advice") or []
    if advice:
        lines += ["What to try:", ""] + [f"- {a}" for a in advice[:4]] + [""]
    if inp.overfit_md.is_file():
        lines += [f"Evidence and all checks: [overfitting.md]({rel(inp.overfit_md, out_dir)}).", ""]
    return lines


COCO_LABELS = {"AP50": "AP@0.5", "AP75": "AP@0.75", "APs": "AP small", "APm": "AP medium",
               "APl": "AP large", "AR1": "AR (1 det/image)", "AR10": "AR (10 det/image)",
               "AR100": "AR (100 det/image)", "ARs": "AR small", "ARm": "AR medium", "ARl": "AR large"}


def _prf(p: Prf) -> str:
    return f"P {num(p.precision)} · R {num(p.recall)} · F1 {num(p.f1)} at confidence {num(p.confidence, 3)}"


def section_map(inp: Inputs, out_dir: Path) -> list[str]:
    lines = ["## mAP on the test split", ""]
    m, why = load(MapMetrics.read, inp.metrics)
    if m is None:
        return lines + [unreadable("mAP metrics", why) if why else missing("mAP metrics", inp.metrics, out_dir, "map"), ""]
    lines += table(["metric", "value"], [
        [f"VOC mAP@{m.min_overlap:g} ({'11-point' if m.voc07 else 'all-point'})", f"**{num(m.map50)}**"],
        ["COCO mAP@[.5:.95]", f"**{num(m.map50_95)}**"],
    ] + [[f"COCO {COCO_LABELS[k]}", "n/a (no such objects)" if getattr(m.coco, k) == -1 else num(getattr(m.coco, k))]
         for k in COCO_STATS if k != "AP"] + [
        ["at predict confidence", _prf(m.at_confidence)],
        ["at best-F1 confidence", _prf(m.best_f1)],
    ]) + [""]
    info, _ = load(MapInfo.read, inp.map_info)
    gt = info.counts.ground_truth if info is not None else {}
    rows = [[c, num(gt.get(c)), num(ap), num(m.coco.per_class.get(c))] for c, ap in m.voc.per_class.items()]
    if rows:
        lines += ["Per class (– : no ground truth in the test split, so not averaged):", ""]
        lines += table(["class", "ground truth", "VOC AP@0.5", "COCO AP@[.5:.95]"], rows) + [""]
    lines += [f"Source: [metrics.json]({rel(inp.metrics, out_dir)}).", ""]
    return lines


def section_pr(inp: Inputs, out_dir: Path) -> list[str]:
    lines = ["## Precision-recall curves", ""]
    pngs = sorted(inp.pr_dir.glob("*.png")) if inp.pr_dir.is_dir() else []
    if not pngs:
        return lines + [missing("PR curves", inp.pr_dir, out_dir, "map"), ""]
    # Summary figures (all classes, P/R/F1 vs confidence) first, per-class thumbnails after.
    overview = [p for p in pngs if any(k in p.stem.lower() for k in ("all", "summary", "overview", "pr_curves"))]
    for p in overview:
        lines += [image(p, out_dir, p.stem.replace("_", " ")), ""]
    thumbs = [p for p in pngs if p not in overview]
    if thumbs:
        lines += [" ".join(image(p, out_dir, p.stem, width="32%") for p in thumbs), ""]
    return lines


def section_confidence(inp: Inputs, out_dir: Path) -> list[str]:
    folder = inp.metrics.parent
    pngs = [p for p in sorted([*folder.glob("*.png"), *folder.glob("figures/*.png")])
            if p.resolve() != inp.confusion.resolve() and inp.pr_dir.resolve() not in p.resolve().parents]
    if not pngs:
        return []
    lines = ["## Precision, recall and F1 against confidence", ""]
    if len(pngs) == 1:
        return lines + [image(pngs[0], out_dir, "Precision, recall and F1 against confidence"), ""]
    return lines + [" ".join(image(p, out_dir, p.stem.replace("_", " "), width="48%") for p in pngs), ""]


def section_confusion(inp: Inputs, out_dir: Path) -> list[str]:
    lines = ["## Confusion matrix", ""]
    if not inp.confusion.is_file():
        return lines + [missing("confusion matrix", inp.confusion, out_dir, "map"), ""]
    return lines + [image(inp.confusion, out_dir, "Confusion matrix on the test split"), ""]


def section_predictions(inp: Inputs, out_dir: Path) -> list[str]:
    lines = ["## Sample predictions", ""]
    folder = inp.predictions
    files = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")) \
        if folder.is_dir() else []
    if not files:
        return lines + [missing("sample predictions", folder, out_dir, "predict"), ""]
    grids = [p for p in files if "grid" in p.stem.lower()]
    for g in grids:
        lines += [image(g, out_dir, "Test images: true positives, false positives and misses"), ""]
    singles = [p for p in files if p not in grids]
    if singles:
        lines += [" ".join(image(p, out_dir, p.stem, width="24%") for p in singles[:16]), ""]
    return lines


def stage_times(inp: Inputs) -> list[tuple[str, Any, Path]]:
    """(stage, seconds or None, where the figure comes from) in pipeline order."""
    def seconds(path: Path) -> Any:
        d = read_json(path)
        return pick(d, "seconds", "wall_seconds", "time_s") if d else None

    # annotate and split keep their reports free of timings (an unchanged result must not rerun
    # the stages after them; their seconds are in their logs), so the table starts at training.
    rows = []
    for phase, path in (("train_frozen", inp.frozen), ("train_unfrozen", inp.unfrozen)):
        rows.append((phase, _train_summary(read_tsv(path)).get("seconds"), path))
    summary = inp.predict_summary
    info, _ = load(MapInfo.read, inp.map_info)
    rows += [("predict", seconds(summary), summary), ("map", info.seconds if info else None, inp.map_info),
             ("overfit", seconds(inp.overfit_json), inp.overfit_json)]
    return rows


def section_times(inp: Inputs, out_dir: Path) -> list[str]:
    rows, total = [], 0.0
    for stage, sec, src in stage_times(inp):
        rows.append([stage, duration(sec), f"[{src.name}]({rel(src, out_dir)})" if sec is not None
                     else f"_missing: `{rel(src, out_dir)}`_"])
        total += sec if isinstance(sec, (int, float)) else 0.0
    rows.append(["**total**", f"**{duration(total)}**", "training: sum of the TSVs' per-epoch seconds (training passes)"])
    return ["## How long each stage took", ""] + table(["stage", "wall time", "from"], rows) + [""]


def headline_metrics(inp: Inputs) -> tuple[Headline, list[str]]:
    """DVC's metrics file (`Headline`) from the map stage's metrics, the training history and the
    verdict, with a note for each input that is missing (its figures are then null)."""
    notes = []
    m, why = load(MapMetrics.read, inp.metrics)
    if m is None:
        notes.append(f"no test scores: {why or f'{inp.metrics} missing'}")
    frames = [f for f in (read_tsv(inp.frozen), read_tsv(inp.unfrozen)) if f is not None]
    maps = pd.concat(frames)["val_map50"].dropna() if frames else pd.Series(dtype=float)
    if maps.empty:
        notes.append(f"no val mAP50: no epochs in {inp.frozen} or {inp.unfrozen}")
    verdict = (read_json(inp.overfit_json) or {}).get("verdict")
    if not isinstance(verdict, str):
        notes.append(f"no overfitting verdict in {inp.overfit_json}")
    at = m.at_confidence if m else None
    return Headline(map50=m.map50 if m else None, map50_95=m.map50_95 if m else None,
                    precision=at.precision if at else None, recall=at.recall if at else None,
                    f1=at.f1 if at else None, best_val_map50=round(float(maps.max()), 6) if len(maps) else None,
                    verdict=verdict if isinstance(verdict, str) else "unknown"), notes


def headline(inp: Inputs, out_dir: Path) -> list[str]:
    h, _ = headline_metrics(inp)
    v = read_json(inp.overfit_json) or {}
    total = sum(s for _, s, _ in stage_times(inp) if isinstance(s, (int, float)))
    rows = [["VOC mAP@0.5 (test)", num(h.map50)],
            ["COCO mAP@[.5:.95] (test)", num(h.map50_95)],
            ["overfitting verdict", h.verdict],
            ["best epoch (val mAP50)", f"{num(v.get('best_epoch'))} ({num(h.best_val_map50)})"],
            ["pipeline wall time", duration(total) if total else "–"]]
    return table(["at a glance", ""], rows) + [""]


SECTIONS: list[Section] = [section_dataset, section_split, section_training, section_verdict,
                           section_map, section_pr, section_confidence, section_confusion,
                           section_predictions, section_times]


def build_index(inp: Inputs, out: Path) -> str:
    """Render the index page text for `out` (links relative to out's folder)."""
    out_dir = Path(out).parent
    lines = ["# detpipe report", "",
             "Everything the pipeline measured, on one page. Regenerate with `dvc repro` "
             "(or `snakemake --cores 1`).", ""]
    lines += headline(inp, out_dir)
    for section in SECTIONS:
        body = section(inp, out_dir)
        while body and body[-1] == "":
            body.pop()
        if body:
            lines += body + [""]
    return "\n".join(lines)


def write_index(inp: Inputs, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build_index(inp, out), encoding="utf-8")
    return out

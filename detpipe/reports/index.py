"""reports/index.md: the one page a person opens first.

Every input comes from the stage's command line (the stage table). A missing file gives a line
saying what is missing and which stage writes it; a file that does not fit its contract
(detpipe/artifacts/) stops the stage with one line naming it. Links and images are relative to the
index so the page reads the same on GitHub, in a local Markdown viewer and offline.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

import pandas as pd

from detpipe.artifacts.annotate_report import AnnotateReport
from detpipe.artifacts.base import Artifact
from detpipe.artifacts.overfit_verdict import OverfitVerdict
from detpipe.artifacts.predict_summary import PredictSummary
from detpipe.artifacts.split_report import SplitReport


def _input(what: str) -> Any:
    return field(metadata={"help": what})


@dataclass(frozen=True)
class Inputs:
    """Where each input lives: every path from the report stage's command line (the stage table)."""

    annotate: Path = _input("annotate stage's JSON")
    split: Path = _input("split stage's JSON")
    split_png: Path = _input("split distributions PNG")
    frozen: Path = _input("frozen-phase history TSV")
    unfrozen: Path = _input("unfrozen-phase history TSV")
    overfit_json: Path = _input("overfit stage's JSON")
    overfit_md: Path = _input("overfit stage's Markdown")
    overfit_png: Path = _input("training curves PNG")
    metrics: Path = _input("map stage's metrics.json")
    map_info: Path = _input("map stage's info.json (its seconds)")
    pr_dir: Path = _input("folder of PR-curve PNGs")
    prf_png: Path = _input("precision/recall/F1 against confidence PNG")
    confusion: Path = _input("confusion matrix PNG")
    predictions: Path = _input("folder of sample prediction images")
    predict_summary: Path = _input("predict stage's JSON (its seconds)")


A = TypeVar("A", bound=Artifact)


def load(contract: type[A], path: Path) -> A | None:
    """The artifact, or None when the file is not there (the page then says what is missing);
    a file that does not fit its contract is an ArtifactError: the page would be wrong."""
    return contract.read(path) if Path(path).is_file() else None


# --------------------------------------------------------------------------- helpers

def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_tsv(path: Path) -> pd.DataFrame | None:
    try:
        frame = pd.read_csv(path, sep="\t")
    except (OSError, ValueError, pd.errors.EmptyDataError):
        return None
    return frame if len(frame) else None


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


def _skipped(skipped: dict[str, int]) -> str:
    if not sum(skipped.values()):
        return ""
    return " (skipped: " + ", ".join(f"{k} {v}" for k, v in skipped.items()) + ")"


# --------------------------------------------------------------------------- sections

Section = Callable[[Inputs, Path], list[str]]


def section_dataset(inp: Inputs, out_dir: Path) -> list[str]:
    lines = ["## Dataset", ""]
    d = load(AnnotateReport, inp.annotate)
    if d is None:
        return lines + [missing("dataset summary", inp.annotate, out_dir, "annotate"), ""]
    facts = [f"**{d.images.kept}** images" + _skipped(d.images.skipped),
             f"**{d.objects.kept}** objects" + _skipped(d.objects.skipped),
             f"**{d.images.without_objects}** images without objects", f"**{len(d.warnings)}** warnings"]
    lines += [" · ".join(facts) + f" ([annotate.json]({rel(inp.annotate, out_dir)}))", ""]
    if d.warning_counts:
        lines += ["Warnings by kind: " + ", ".join(f"{k} {v}" for k, v in d.warning_counts.items()) + ".", ""]
    if d.per_class:
        rows = [[name, c.objects, c.images, c.difficult] for name, c in d.per_class.items()]
        lines += table(["class", "objects", "images", "difficult"], rows) + [""]
    if d.warnings:
        shown = f"first 20 of {len(d.warnings)}" if len(d.warnings) > 20 else str(len(d.warnings))
        lines += [f"<details><summary>Warnings ({shown})</summary>", ""]
        lines += [f"- {w.message}" for w in d.warnings[:20]]
        lines += ["", "</details>", ""]
    return lines


def section_split(inp: Inputs, out_dir: Path) -> list[str]:
    lines = ["## Split check", ""]
    d = load(SplitReport, inp.split)
    if d is None:
        lines += [missing("split report", inp.split, out_dir, "split"), ""]
    else:
        buckets = list(dict.fromkeys(k for s in d.splits.values() for k in s.box_sizes))
        rows = []
        for name, s in d.splits.items():
            c = d.comparison.get(name)
            flag = ("reference" if c is None else f"**flagged**: {c.reason}" if c.flagged
                    else f"class shift {num(c.class_shift, 2)}, size shift {num(c.size_shift, 2)}")
            rows.append([name, s.images, s.objects] + [num(s.box_sizes.get(b)) for b in buckets] + [flag])
        lines += table(["split", "images", "objects"] + [f"{b} boxes" for b in buckets]
                       + ["vs train (total variation)"], rows) + [""]
        names = list(dict.fromkeys(c for s in d.splits.values() for c in s.class_objects))
        if names:
            lines += ["Objects per class and split:", ""]
            lines += table(["class"] + list(d.splits), [[c] + [num(s.class_objects.get(c)) for s in d.splits.values()]
                                                         for c in names]) + [""]
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
    return {"epochs": len(frame), "seconds": float(pd.to_numeric(frame.get("seconds"), errors="coerce").sum())
            if "seconds" in frame else None,
            "train_loss": last.get("train_loss"), "val_loss": last.get("val_loss"),
            "val_map50": last.get("val_map50"),
            "images_per_s": float(pd.to_numeric(frame["images_per_s"], errors="coerce").mean())
            if "images_per_s" in frame else None}


def section_training(inp: Inputs, out_dir: Path) -> list[str]:
    lines = ["## Training", ""]
    rows = []
    for phase, path in (("frozen", inp.frozen), ("unfrozen", inp.unfrozen)):
        s = _train_summary(read_tsv(path))
        if not s:
            lines.append(missing(f"{phase}-phase history", path, out_dir, f"train_{phase}"))
            continue
        rows.append([f"[{phase}]({rel(path, out_dir)})", s["epochs"], num(s["train_loss"]),
                     num(s["val_loss"]), num(s["val_map50"]), num(s["images_per_s"], 1), duration(s["seconds"])])
    if rows:
        if lines[-1] != "":
            lines.append("")
        lines += table(["phase", "epochs", "final train loss", "final val loss", "final val mAP50",
                        "images/s", "time"], rows)
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
    d = load(OverfitVerdict, inp.overfit_json)
    if d is None:
        return lines + [missing("overfitting verdict", inp.overfit_json, out_dir, "overfit"), ""]
    lines += [f"**{d.verdict.capitalize()}** — {' '.join(d.reason)}.", ""]
    lines += [f"Best epoch {num(d.best_epoch)} (val mAP50 {num(d.best_val_map50)}); "
              f"relative gap (val − train) / train now {num(d.gap.final_relative, 2)}, "
              f"change over the last {d.gap.last_k} epochs {_signed(d.gap.change_relative_last_k)}.", ""]
    if d.advice:
        lines += ["What to try:", ""] + [f"- {a}" for a in d.advice[:4]] + [""]
    if inp.overfit_md.is_file():
        lines += [f"Evidence and all checks: [overfitting.md]({rel(inp.overfit_md, out_dir)}).", ""]
    return lines


COCO_STAT_NAMES = ["AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
                   "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large"]


COCO_LABELS = {"AP50": "AP@0.5", "AP75": "AP@0.75", "APs": "AP small", "APm": "AP medium",
               "APl": "AP large", "AR1": "AR (1 det/image)", "AR10": "AR (10 det/image)",
               "AR100": "AR (100 det/image)", "ARs": "AR small", "ARm": "AR medium", "ARl": "AR large"}


def _ap(v: Any) -> Any:
    return pick(v, "ap", "AP", "ap50", "map", "value") if isinstance(v, dict) else v


def _gt(v: Any) -> Any:
    return pick(v, "gt", "n_gt", "ground_truth", "positives", "npos") if isinstance(v, dict) else None


def coco_stats(m: dict) -> dict[str, Any]:
    stats = pick(m, "coco.stats", "coco_stats", "coco")
    if isinstance(stats, list):
        return dict(zip(COCO_STAT_NAMES, stats))
    if isinstance(stats, dict):
        return {k: v for k, v in stats.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {}


def _prf(d: Any) -> str:
    if not isinstance(d, dict):
        return "–"
    p, r, f1 = pick(d, "precision", "p"), pick(d, "recall", "r"), pick(d, "f1", "F1")
    thr = pick(d, "confidence", "threshold", "conf")
    return f"P {num(p)} · R {num(r)} · F1 {num(f1)}" + (f" at confidence {num(thr, 3)}" if thr is not None else "")


def section_map(inp: Inputs, out_dir: Path) -> list[str]:
    lines = ["## mAP on the test split", ""]
    m = read_json(inp.metrics)
    if m is None:
        return lines + [missing("mAP metrics", inp.metrics, out_dir, "map"), ""]
    coco = coco_stats(m)
    lines += table(["metric", "value"], [
        ["VOC mAP@0.5 (all-point)", f"**{num(pick(m, 'map50', 'voc.map', 'voc.map50'))}**"],
        ["COCO mAP@[.5:.95]", f"**{num(pick(m, 'map50_95', 'coco.map50_95') or coco.get('AP'))}**"],
    ] + [[f"COCO {COCO_LABELS.get(k, k)}", "n/a (no such objects)" if v == -1 else num(v)]
         for k, v in coco.items() if k != "AP"] + [
        ["at predict confidence", _prf(pick(m, "at_confidence"))],
        ["at best-F1 confidence", _prf(pick(m, "best_f1"))],
    ]) + [""]
    voc = pick(m, "voc.per_class", "per_class") or {}
    cpc = pick(m, "coco.per_class", "coco_per_class") or {}
    gt = pick(read_json(inp.map_info) or {}, "counts.ground_truth") or {}
    names = list(voc) + [c for c in cpc if c not in voc] if isinstance(voc, dict) and isinstance(cpc, dict) else []
    if names:
        rows = [[c, num(_gt(voc.get(c)) or _gt(cpc.get(c)) or (gt.get(c) if isinstance(gt, dict) else None)),
                 num(_ap(voc.get(c))), num(_ap(cpc.get(c)))] for c in names]
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
    lines = ["## Precision, recall and F1 against confidence", ""]
    if not inp.prf_png.is_file():
        return lines + [missing("P/R/F1 against confidence", inp.prf_png, out_dir, "map"), ""]
    return lines + [image(inp.prf_png, out_dir, "Precision, recall and F1 against confidence"), ""]


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
    def seconds(contract: type[PredictSummary] | type[OverfitVerdict], path: Path) -> float | None:
        d = load(contract, path)
        return d.seconds if d else None

    # annotate and split keep their reports free of timings (an unchanged result must not rerun
    # the stages after them; their seconds are in their logs), so the table starts at training.
    rows = []
    for phase, path in (("train_frozen", inp.frozen), ("train_unfrozen", inp.unfrozen)):
        rows.append((phase, _train_summary(read_tsv(path)).get("seconds"), path))
    info = read_json(inp.map_info)
    rows += [("predict", seconds(PredictSummary, inp.predict_summary), inp.predict_summary),
             ("map", pick(info, "seconds", "wall_seconds", "time_s") if info else None, inp.map_info),
             ("overfit", seconds(OverfitVerdict, inp.overfit_json), inp.overfit_json)]
    return rows


def section_times(inp: Inputs, out_dir: Path) -> list[str]:
    rows, total = [], 0.0
    for stage, sec, src in stage_times(inp):
        rows.append([stage, duration(sec), f"[{src.name}]({rel(src, out_dir)})" if sec is not None
                     else f"_missing: `{rel(src, out_dir)}`_"])
        total += sec if isinstance(sec, (int, float)) else 0.0
    rows.append(["**total**", f"**{duration(total)}**", "training: sum of the TSVs' per-epoch seconds (training passes)"])
    return ["## How long each stage took", ""] + table(["stage", "wall time", "from"], rows) + [""]


def headline(inp: Inputs, out_dir: Path) -> list[str]:
    m, v = read_json(inp.metrics) or {}, load(OverfitVerdict, inp.overfit_json)
    total = sum(s for _, s, _ in stage_times(inp) if isinstance(s, (int, float)))
    rows = [["VOC mAP@0.5 (test)", num(pick(m, "map50", "voc.map", "voc.map50"))],
            ["COCO mAP@[.5:.95] (test)", num(pick(m, "map50_95", "coco.map50_95") or coco_stats(m).get("AP"))],
            ["overfitting verdict", v.verdict if v else "–"],
            ["best epoch (val mAP50)", f"{num(v.best_epoch)} ({num(v.best_val_map50)})" if v else "–"],
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

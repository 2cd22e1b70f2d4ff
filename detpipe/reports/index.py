"""reports/index.md: the one page a person opens first.

Every input comes from the stage's command line (the stage table). A missing file gives a line
saying what is missing and which stage writes it; a file that does not fit its contract
(detpipe/artifacts/) stops the stage with one line naming it. Links and images are relative to the
index so the page reads the same on GitHub, in a local Markdown viewer and offline.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

import pandas as pd

from . import counted
from ..artifacts.history import read_history
from ..artifacts.metrics import COCO_STATS, SIZE_STATS, Headline, MapInfo, MapMetrics, Prf
from ..artifacts.annotate_report import AnnotateReport
from ..artifacts.base import Artifact
from ..artifacts.error import ArtifactError
from ..artifacts.overfit_verdict import OverfitVerdict
from ..artifacts.predict_summary import PredictSummary
from ..artifacts.train_recipe import TrainRecipe
from ..artifacts.split_report import SplitReport



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
    recipe: Path = _input("train_unfrozen's JSON of the settings it resolved (auto) and why")
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

def attempt(read: Callable[[Path], Any], path: Path) -> tuple[Any, str | None]:
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
    frame, _ = attempt(read_history, path)
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
    return {"epochs": len(frame), "seconds": float(frame["seconds"].sum()),
            "train_loss": float(last["train_loss"]), "val_loss": float(last["val_loss"]),
            "val_map50": float(last["val_map50"]), "val_map50_95": float(last["val_map50_95"]),
            "images_per_s": float(frame["images_per_s"].mean())}


def section_training(inp: Inputs, out_dir: Path) -> list[str]:
    lines = ["## Training", ""]
    rows = []
    for phase, path in (("frozen", inp.frozen), ("unfrozen", inp.unfrozen)):
        frame, why = attempt(read_history, path)
        s = _train_summary(frame if frame is not None and len(frame) else None)
        if frame is not None and not len(frame):  # a phase of 0 epochs (the recipe below says why)
            rows.append([f"[{phase}]({rel(path, out_dir)})", 0] + ["–"] * 6)
            continue
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
    recipe = load(TrainRecipe, inp.recipe)
    if recipe is None:
        lines += [missing("resolved settings", inp.recipe, out_dir, "train_unfrozen"), ""]
    else:
        lines += ["Settings resolved from the data and params.yaml:", ""] + [f"- {c.line()}" for c in recipe.choices]
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
    shown = {lv.advice for lv in d.levers}  # already on the first page, under "What limits the model"
    rest = [a for a in d.advice if a not in shown]
    if rest:
        lines += ["What else to try:" if shown else "What to try:", ""] + [f"- {a}" for a in rest[:4]] + [""]
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
    m, why = attempt(MapMetrics.read, inp.metrics)
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
    rows = [[name, f"{num(s.area[0], 0)}–{num(s.area[1], 0) if s.area[1] < 1e9 else '∞'}", s.ground_truth,
             s.found50 if s.ground_truth else "n/a", num(s.ap50) if s.ground_truth else "n/a",
             _size_ap(m, name)] for name, s in m.sizes.items()]
    lines += ["By object size (area in px² of the original image; n/a: no such objects in the test split):", ""]
    lines += table(["size", "area (px²)", "objects", "found at IoU 0.5", "AP@0.5", "AP@[.5:.95]"], rows) + [""]
    info, _ = attempt(MapInfo.read, inp.map_info)
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
    # annotate, split and overfit keep their reports free of timings (an unchanged result must not
    # rerun the stages after them; their seconds are in their logs), so the table has the others.
    rows = []
    for phase, path in (("train_frozen", inp.frozen), ("train_unfrozen", inp.unfrozen)):
        rows.append((phase, _train_summary(read_tsv(path)).get("seconds"), path))
    info, _ = attempt(MapInfo.read, inp.map_info)
    summary = load(PredictSummary, inp.predict_summary)
    rows += [("predict", summary.seconds if summary else None, inp.predict_summary),
             ("map", info.seconds if info else None, inp.map_info)]
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
    m, why = attempt(MapMetrics.read, inp.metrics)
    if m is None:
        notes.append(f"no test scores: {why or f'{inp.metrics} missing'}")
    frames = [f for f in (read_tsv(inp.frozen), read_tsv(inp.unfrozen)) if f is not None]
    maps = pd.concat(frames)["val_map50"].dropna() if frames else pd.Series(dtype=float)
    if maps.empty:
        notes.append(f"no val mAP50: no epochs in {inp.frozen} or {inp.unfrozen}")
    v = load(OverfitVerdict, inp.overfit_json)
    verdict = v.verdict if v else None
    if verdict is None:
        notes.append(f"no overfitting verdict: {inp.overfit_json} missing")
    at = m.at_confidence if m else None
    return Headline(map50=m.map50 if m else None, map50_95=m.map50_95 if m else None,
                    precision=at.precision if at else None, recall=at.recall if at else None,
                    f1=at.f1 if at else None, best_val_map50=round(float(maps.max()), 6) if len(maps) else None,
                    verdict=verdict if isinstance(verdict, str) else "unknown"), notes


def _size_ap(m: MapMetrics, name: str) -> str:
    """AP@[.5:.95] of one size; n/a without ground truth (COCO's -1), never 0 or -1."""
    ap = getattr(m.coco, SIZE_STATS[name])
    return "n/a" if not m.sizes[name].ground_truth or ap is None or ap < 0 else num(ap)


def size_lines(m: MapMetrics | None, v: OverfitVerdict | None) -> list[str]:
    """Where the sizes come from and what the model sees of them."""
    if m is None:
        return []
    scale = v.input_scale if v else None
    seen = ""
    if scale is not None and scale.imgsz is not None and scale.median_px is not None:
        seen = (f" Letterboxed to `model.imgsz` {scale.imgsz} (what the model sees), the median train object, "
                f"√(w·h), is {num(scale.median_px, 1)} px"
                + (f" and the median small one {num(scale.median_small_px, 1)} px." if scale.median_small_px is not None
                   else "."))
    return [f"Object sizes are COCO's areas measured on the original image (small < 32², medium 32²–96², "
            f"large > 96² px²), not on the letterboxed input.{seen}", ""]


def headline(inp: Inputs, out_dir: Path) -> list[str]:
    h, _ = headline_metrics(inp)
    v = load(OverfitVerdict, inp.overfit_json)
    m, _ = attempt(MapMetrics.read, inp.metrics)
    total = sum(s for _, s, _ in stage_times(inp) if isinstance(s, (int, float)))
    rows = [["VOC mAP@0.5 (test)", num(h.map50)],
            ["COCO mAP@[.5:.95] (test)", num(h.map50_95)]]
    if m is not None:
        rows.append(["COCO AP@[.5:.95] by object size (test)", " · ".join(f"{n} {_size_ap(m, n)} ({counted(m.sizes[n].ground_truth, 'object')})"
                                                                   for n in SIZE_STATS)])
    rows += [["overfitting verdict", h.verdict],
             ["best epoch (val mAP50)", f"{num(v.best_epoch) if v else '–'} ({num(h.best_val_map50)})"],
             ["pipeline wall time", duration(total) if total else "–"]]
    lines = table(["at a glance", ""], rows) + [""] + size_lines(m, v)
    if v is not None and v.levers:
        lines += ["**What limits the model** (from the evidence; figures in "
                  f"[overfitting.md]({rel(inp.overfit_md, out_dir)})):", ""]
        lines += [f"- {lv.advice}" for lv in v.levers] + [""]
    return lines


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
